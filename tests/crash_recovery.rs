//! Crash test: QoS 1 publishers under load, the agent SIGKILLed mid-stream and restarted with
//! the same data_dir and config. Every reading the publishers got a PUBACK for (the broker keeps
//! unacknowledged and queued messages for the agent's persistent session) must be in the outbox
//! at least once after the restart (duplicates are allowed and reported), and the windows must
//! continue after the crash point without gaps.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use vigil_test_harness::{Mosquitto, MosquittoOptions};

/// Also requires that no window is left unscored across the crash (a checkpoint must never be
/// committed ahead of the scores of the windows it counts as emitted).
#[test]
fn kill_9_mid_stream_loses_nothing() {
    let started = Instant::now();
    let broker = Mosquitto::start(MosquittoOptions { max_queued_messages: Some(1_000_000), ..Default::default() }).unwrap();
    let id = "crash";
    let PlantAgent { dir: _dir, config, outbox, mut agent } = PlantAgent::start(&broker, id);

    // 4 entities, warm-up + 800 readings each, one `mosquitto_pub -l -q 1` per entity fed at
    // ~200 lines/s, so the stream is still running when the agent is killed.
    let warm = model_warmup();
    // Long enough that the stream is still running when the kill condition below is met, even on
    // a loaded machine.
    let n = warm + 800;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    let entities: Vec<(String, Vec<(i64, f64)>)> =
        (0..4).map(|i| (format!("l{i}.temp"), series(10 + i as u64, t0, n, 20.0 + 10.0 * i as f64, None))).collect();
    let total = 4 * n;
    let publishers: Vec<std::thread::JoinHandle<()>> = entities
        .iter()
        .map(|(e, s)| {
            let topic = format!("plant/{}/value", e.replace('.', "/"));
            let lines: Vec<String> = s.iter().map(|&(t, v)| json_reading(t, v)).collect();
            let port = broker.plain_port();
            std::thread::spawn(move || {
                let mut child = Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", &topic, "-q", "1", "-l", "-i", &format!("pub-{}", topic.replace('/', "-"))])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("mosquitto_pub");
                let mut stdin = child.stdin.take().unwrap();
                for chunk in lines.chunks(5) {
                    for l in chunk {
                        writeln!(stdin, "{l}").unwrap();
                    }
                    stdin.flush().unwrap();
                    // Load pacing (not synchronisation).
                    std::thread::sleep(Duration::from_millis(25));
                }
                drop(stdin);
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "mosquitto_pub {topic}: {}", String::from_utf8_lossy(&out.stderr));
            })
        })
        .collect();

    // Kill once the agent has acknowledged warm-up + 100 readings per entity (its PUBACKs in the
    // broker log) and every entity has a delivered score, so windows were scored before the crash
    // and must continue after it.
    let kill_at = 4 * (warm + 100);
    let needle = format!("Received PUBACK from vigil-{id}");
    let mut acked = 0usize;
    broker
        .wait_for_log(|l| {
            if l.contains(&needle) {
                acked += 1;
            }
            acked >= kill_at
        }, Duration::from_secs(60))
        .expect("agent acknowledges readings");
    wait_for_outbox(&outbox, Duration::from_secs(60), Some(&agent), "a scored window per entity before the crash", |recs| {
        let sc = scores(recs);
        entities.iter().all(|(e, _)| sc.iter().any(|(se, _, _)| se == e))
    });
    agent.kill_9().unwrap();
    let publishers_done_at_kill = publishers.iter().filter(|p| p.is_finished()).count();
    let before = read_outbox(&outbox);
    // Per entity, the last window whose score was delivered before the kill. (Not the last
    // delivered reading: sinks drain scores before readings, so under load the delivered
    // readings lag behind the delivered scores.)
    let mut crash_point: BTreeMap<String, i64> = BTreeMap::new();
    for (e, w, _) in scores(&before) {
        let c = crash_point.entry(e).or_insert(i64::MIN);
        *c = (*c).max(w);
    }
    eprintln!(
        "killed after {acked} agent PUBACKs of {total}; {} readings in outbox files; {publishers_done_at_kill}/4 publishers done; last windows scored before the kill {crash_point:?}",
        readings(&before).len()
    );
    assert!(publishers_done_at_kill < 4, "the stream had already finished when the agent was killed");

    // Restart with the same data_dir and config; publishing continues meanwhile.
    let agent2 = spawn_agent(&config);
    agent2.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent reconnects after the crash");
    assert!(
        agent2.lines().iter().any(|l| l.contains("MQTT connected") && l.contains("session_present=true")),
        "the persistent session should survive the crash:\n{}",
        agent2.lines().join("\n")
    );
    for p in publishers {
        p.join().expect("publisher thread");
    }
    eprintln!("all {total} readings acknowledged by the broker after {:?}", started.elapsed());

    // Drain: every reading at least once, and the last window of every entity scored.
    let records = wait_for_outbox(&outbox, Duration::from_secs(120), Some(&agent2), "every reading and the last windows", |recs| {
        let have: BTreeSet<(String, i64)> = readings(recs).into_iter().map(|(e, t, _)| (e, t)).collect();
        let sc = scores(recs);
        entities.iter().all(|(e, s)| s.iter().all(|&(t, _)| have.contains(&(e.clone(), t))))
            && entities.iter().all(|(e, s)| {
                let last = last_window_end(s.last().unwrap().0);
                sc.iter().any(|(se, w, _)| se == e && *w == last)
            })
    });

    // Readings: at least once; report duplicates.
    let mut counts: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (e, t, _) in readings(&records) {
        *counts.entry((e, t)).or_default() += 1;
    }
    for (e, s) in &entities {
        for &(t, _) in s {
            assert!(counts.get(&(e.clone(), t)).copied().unwrap_or(0) >= 1, "reading {e} @ {t} lost");
        }
    }
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert_eq!(counts.len(), total, "unexpected readings in the outbox");
    eprintln!(
        "{} readings in the outbox for {total} published: {} duplicated reading(s){}",
        readings(&records).len(),
        dups.len(),
        if dups.is_empty() { String::new() } else { format!(", e.g. {:?}", &dups[..dups.len().min(5)]) }
    );

    // Windows continue after the crash point, without gaps: every hop from the first scored
    // window to the last has a score record.
    let sc = scores(&records);
    for (e, s) in &entities {
        let ends: BTreeSet<i64> = sc.iter().filter(|x| &x.0 == e).map(|x| x.1).collect();
        let cp = crash_point.get(e).copied().unwrap_or(i64::MIN);
        let after = ends.iter().filter(|&&w| w > cp).count();
        assert!(after > 0, "{e}: no scores for windows after the crash point {cp}");
        let (first, last) = (*ends.iter().next().unwrap(), *ends.iter().last().unwrap());
        assert_eq!(last, last_window_end(s.last().unwrap().0));
        let missing: Vec<i64> = (0..).map(|k| first + k * HOP_MS).take_while(|w| *w <= last).filter(|w| !ends.contains(w)).collect();
        assert!(missing.is_empty(), "{e}: windows without a score after the restart: {missing:?} (crash point {cp})");
        let dup_scores = sc.iter().filter(|x| &x.0 == e).count() - ends.len();
        eprintln!("{e}: {} windows scored ({after} after the crash point), {dup_scores} duplicate score records", ends.len());
        assert!(ends.len() > after, "{e}: no window was scored before the crash; the test did not cross a crash");
    }
    assert_no_panic(&agent2);
    eprintln!("crash test done in {:?}", started.elapsed());
}
