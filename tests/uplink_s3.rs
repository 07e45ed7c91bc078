//! S3 data-lake uplink against a real S3 server (moto 5.2.5), read back by an independent client
//! (Python boto3). Also: the outbox quota with a dead sink.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloud_uplink::s3_sink::decode_object;
use cloud_uplink::{Body, Envelope};
use serde::Deserialize;
use support::*;
use vigil_test_harness::{free_port, run_peer_script, Mosquitto, MosquittoOptions, MotoS3, Server};

#[derive(Deserialize)]
struct Object {
    key: String,
    body_hex: String,
}


/// Every object in the bucket: (key, decoded records).
fn objects(s3: &Server, bucket: &str) -> Vec<(String, Vec<Envelope>)> {
    let out = run_peer_script("s3_dump.py", &[MotoS3::endpoint(s3), bucket.to_string()]).unwrap_or_else(|e| panic!("s3_dump: {e}"));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let o: Object = serde_json::from_str(l).unwrap();
            let records = decode_object(&hex::decode(&o.body_hex).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", o.key));
            (o.key, records)
        })
        .collect()
}

/// `site=…/agent=…/kind=…/date=…/hour=…/first-last.jsonl.zst`, consistent with the records.
fn check_object_name(key: &str, records: &[Envelope], agent: &str) {
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 7, "{key}");
    assert_eq!(parts[0], "lake");
    assert_eq!(parts[1], "site=plant-test");
    assert_eq!(parts[2], format!("agent={agent}"));
    let first = records.first().unwrap();
    assert!(records.iter().all(|r| kind(r) == kind(first)), "one kind per object: {key}");
    assert_eq!(parts[3], format!("kind={}", kind(first)));
    let day = first.event_time_ms.div_euclid(86_400_000);
    let hour = first.event_time_ms.div_euclid(3_600_000) % 24;
    for r in records {
        assert_eq!(r.event_time_ms.div_euclid(3_600_000), first.event_time_ms.div_euclid(3_600_000), "one event-time hour per object: {key}");
    }
    // Civil date of `day` (days since 1970-01-01), Howard Hinnant's algorithm.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    assert_eq!(parts[4], format!("date={y:04}-{m:02}-{d:02}"), "{key}");
    assert_eq!(parts[5], format!("hour={hour:02}"), "{key}");
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ascending seqs in {key}");
    assert_eq!(parts[6], format!("{:020}-{:020}.jsonl.zst", seqs[0], seqs[seqs.len() - 1]));
}

/// An agent on `broker` with `uplink` appended to its config, `outbox_settings` in
/// `[uplink.outbox]`, and without the base config's directory sink unless `with_directory`.
fn start_agent(broker: &Mosquitto, id: &str, uplink: &str, with_directory: bool, outbox_settings: &str) -> PlantAgent {
    PlantAgent::start_with(broker, id, |mut c| {
        if !with_directory {
            let (a, b) = (c.find("[uplink.directory]").unwrap(), c.find("[mqtt]").unwrap());
            c.replace_range(a..b, "");
        }
        let c = c.replace("[uplink.outbox]\n", &format!("[uplink.outbox]\n{outbox_settings}\n"));
        format!("{}\n{uplink}", c.replace("log = \"info\"", "log = \"info,cloud_uplink=debug\""))
    })
}

/// Objects appear under the partitioned names and decode back to exactly the records the
/// directory sink got; an S3 outage (moto stopped; it restarts empty, so the test re-creates
/// the bucket and keeps what it listed before) loses nothing.
#[test]
fn s3_objects_are_partitioned_decode_exactly_and_survive_an_outage() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let mut s3 = MotoS3::start().unwrap();
    MotoS3::create_bucket(&s3, "lake-bucket").unwrap();
    let id = "s3-e2e";
    let uplink = format!(
        "[uplink.s3]\nbucket = \"lake-bucket\"\nprefix = \"lake\"\nsite = \"plant-test\"\nendpoint = \"{}\"\nallow_http = true\n\
         access_key_id = \"test\"\nsecret_access_key = \"test\"\nmax_object_age_s = 1\nrequest_timeout_ms = 3000\nkinds = [\"reading\", \"score\", \"alert\", \"dlq\"]\n",
        MotoS3::endpoint(&s3)
    );
    let PlantAgent { dir: _dir, outbox, agent, .. } = start_agent(&broker, id, &uplink, true, "");

    let warm = model_warmup();
    let (n1, n2) = (warm + 20, 60);
    // Spans more than one event-time hour: 4 s steps.
    let t0 = now_ms().div_euclid(3_600_000) * 3_600_000 - 3_600_000 - (n1 as i64 / 2) * STEP_MS;
    let a = series(31, t0, n1 + n2, 40.0, Some(n1 + n2 - 10));
    let b = series(32, t0, n1 + n2, 60.0, None);
    publish_series(&broker, "x.temp", &a[..n1]);
    publish_series(&broker, "y.temp", &b[..n1]);
    let phase1 = wait_for_outbox(&outbox, Duration::from_secs(60), Some(&agent), "phase 1 readings", |r| {
        r.iter().filter(|e| matches!(e.body, Body::Reading { .. })).count() >= 2 * n1
    });
    let phase1_seqs: Vec<u64> = phase1.iter().filter(|e| !matches!(e.body, Body::Heartbeat { .. })).map(|e| e.seq).collect();
    // S3 has no event to await: poll it (each poll lists and reads every object through boto3,
    // seconds on a loaded machine). The bound only limits how long a failure takes to report.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut before = loop {
        let objs = objects(&s3, "lake-bucket");
        let have: std::collections::BTreeSet<u64> = objs.iter().flat_map(|(_, r)| r.iter().map(|e| e.seq)).collect();
        if phase1_seqs.iter().all(|s| have.contains(s)) {
            break objs;
        }
        assert!(Instant::now() < deadline, "phase 1 records never all reached S3 ({} of {})", have.len(), phase1_seqs.len());
        std::thread::sleep(Duration::from_millis(200));
    };

    // Outage: moto down while the rest (with the anomaly) is ingested.
    s3.stop().unwrap();
    publish_series(&broker, "x.temp", &a[n1..]);
    publish_series(&broker, "y.temp", &b[n1..]);
    let reference = wait_for_outbox(&outbox, Duration::from_secs(60), Some(&agent), "all readings and the alert", |r| {
        r.iter().filter(|e| matches!(e.body, Body::Reading { .. })).count() >= 2 * (n1 + n2)
            && r.iter().any(|e| matches!(e.body, Body::Alert { .. }))
    });
    let from = agent.line_count();
    agent
        .output()
        .wait_for_from(from, "a failed S3 delivery", |l| l.contains("delivery failed") && l.contains("sink=s3"), Duration::from_secs(30))
        .expect("the agent notices the outage");
    s3.start_again().unwrap();
    MotoS3::create_bucket(&s3, "lake-bucket").unwrap();

    let reference: Vec<Envelope> = reference.into_iter().filter(|e| !matches!(e.body, Body::Heartbeat { .. })).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut all = before.clone();
        all.extend(objects(&s3, "lake-bucket"));
        let mut by_seq: BTreeMap<u64, Envelope> = BTreeMap::new();
        for (key, records) in &all {
            check_object_name(key, records, id);
            for r in records {
                if let Some(prev) = by_seq.insert(r.seq, r.clone()) {
                    assert_eq!(prev, *r, "duplicate seq {} differs", r.seq);
                }
            }
        }
        let missing: Vec<u64> = reference.iter().filter(|e| !by_seq.contains_key(&e.seq)).map(|e| e.seq).collect();
        if missing.is_empty() {
            for e in &reference {
                assert_eq!(&by_seq[&e.seq], e, "seq {} decodes differently from S3", e.seq);
            }
            let hours: std::collections::BTreeSet<String> = all.iter().map(|(k, _)| k.split('/').nth(5).unwrap().to_string()).collect();
            assert!(hours.len() >= 2, "the records span two event-time hours: {hours:?}");
            assert!(all.iter().any(|(k, _)| k.contains("kind=alert")), "the alert has its object");
            break;
        }
        assert!(Instant::now() < deadline, "{} records never reached S3 after the outage, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
        std::thread::sleep(Duration::from_millis(300));
        before.retain(|_| true);
    }
    assert_no_panic(&agent);
}

/// A tiny quota with a dead Kafka sink and no other sink: raw readings are dropped (oldest
/// first) and counted; alerts and scores are kept.
#[test]
fn tiny_quota_with_a_dead_sink_drops_only_readings_and_keeps_alerts() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let dead = free_port(); // nothing listens here
    let uplink = format!(
        "[uplink.kafka]\nbrokers = [\"127.0.0.1:{dead}\"]\nrequest_timeout_ms = 500\n[uplink.kafka.topics]\nreading = \"r\"\nscore = \"s\"\nalert = \"a\"\ndlq = \"d\"\n"
    );
    let PlantAgent { dir, config, mut agent, .. } = start_agent(&broker, "quota", &uplink, false, "quota_bytes = 150000");
    let warm = model_warmup();
    let n = warm + 200;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    publish_series(&broker, "q.temp", &series(41, t0, n, 40.0, Some(n - 30)));
    publish_series(&broker, "r.temp", &series(42, t0, n, 70.0, None));
    agent
        .wait_for_line(|l| l.contains("state=raised") || l.contains("state=\"raised\""), Duration::from_secs(60))
        .expect("the anomaly raises an alert");
    // Stop the agent, then read its outbox with `vigil uplink status`.
    agent.terminate().unwrap();
    agent.wait_timeout(Duration::from_secs(30)).unwrap();
    let out = vigil(&["uplink", "status", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let row = |kind: &str| -> (u64, u64) {
        let l = text.lines().find(|l| l.split_whitespace().next() == Some(kind)).unwrap_or_else(|| panic!("no {kind} row in\n{text}"));
        let f: Vec<u64> = l.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
        (f[0], f[2])
    };
    let (alerts_waiting, alerts_dropped) = row("alert");
    let (scores_waiting, scores_dropped) = row("score");
    let (readings_waiting, readings_dropped) = row("reading");
    eprintln!("{text}");
    assert!(alerts_waiting >= 1 && alerts_dropped == 0, "{text}");
    assert!(scores_waiting > 0 && scores_dropped == 0, "{text}");
    assert!(readings_dropped > 0, "readings were dropped: {text}");
    // The agent's final status line counts the readings it committed (it may have been stopped
    // before the broker handed it every published message).
    let committed: u64 = agent
        .lines()
        .iter()
        .rev()
        .find_map(|l| l.split("status readings=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()))
        .expect("the agent logs its final status");
    assert!(committed > 0);
    assert_eq!(readings_waiting + readings_dropped, committed, "every committed reading is either waiting or counted as dropped: {text}");
    drop(dir);
}
