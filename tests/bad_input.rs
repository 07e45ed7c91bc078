//! Bad input over MQTT: random bytes, broken JSON, NaN (bare and as a string), missing fields,
//! a timestamp far in the future and an oversized payload all land in the DLQ with the right
//! reason; the agent keeps running (a good reading published afterwards is processed) and never
//! panics. Then the offline DLQ commands: `list` after a graceful stop, `show ID` prints the raw
//! payload, and `replay` with a config that now accepts the oversized payload moves it back to
//! the readings (delivered to the outbox at the next start).

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;
use vigil_test_harness::{mqtt_publish, Mosquitto, MosquittoOptions};

fn config_text(id: &str, dir: &Path, port: u16, max_payload: usize) -> String {
    format!(
        "{}\n{}\n[validation]\nmax_payload_bytes = {max_payload}\nmax_future_skew_s = 300\n\n[[ingest.mqtt]]\ntopic = \"bad/{{sensor}}\"\nentity = \"bad.{{sensor}}\"\nformat = \"json\"\n",
        base_config(id, &dir.join("data"), &dir.join("outbox")),
        mqtt_plain(port)
    )
}

fn stdout_of(args: &[&str]) -> String {
    let out = vigil(args);
    assert!(out.status.success(), "vigil {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bad_input_goes_to_the_dlq_and_can_be_replayed() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let config = dir.path().join("vigil.toml");
    let id = "bad-input";
    std::fs::write(&config, config_text(id, dir.path(), port, 1024)).unwrap();

    let from = broker.log_line_count();
    let mut agent = spawn_agent(&config);
    agent.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent connects");
    wait_for_subacks(&broker, from, &format!("vigil-{id}"), 1);

    let now = now_ms();
    let mut rng = Rng::new(7);
    let random: Vec<u8> = (0..200).map(|_| rng.next_u64() as u8).collect();
    let pad = "x".repeat(2000);
    let oversized = format!(r#"{{"value": 7.25, "ts": {now}, "pad": "{pad}"}}"#);
    // (topic, payload, expected reason)
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad/random", random.clone(), "undecodable"),
        ("bad/json", br#"{"value": 1.0, "ts": "#.to_vec(), "undecodable"),
        ("bad/nan", format!(r#"{{"value": NaN, "ts": {now}}}"#).into_bytes(), "undecodable"),
        ("bad/nanstr", format!(r#"{{"value": "NaN", "ts": {now}}}"#).into_bytes(), "non_finite"),
        ("bad/huge", format!(r#"{{"value": 3.4028235e38, "ts": {now}}}"#).into_bytes(), "out_of_range"),
        ("bad/novalue", format!(r#"{{"ts": {now}}}"#).into_bytes(), "missing_field"),
        ("bad/nots", br#"{"value": 3.5}"#.to_vec(), "missing_field"),
        ("bad/future", format!(r#"{{"value": 1.0, "ts": {}}}"#, now + 10 * 24 * 3600 * 1000).into_bytes(), "timestamp_skew"),
        ("bad/big", oversized.clone().into_bytes(), "oversized"),
    ];
    for (topic, payload, _) in &bad {
        mqtt_publish(port, topic, payload, 1).expect("publish bad input");
    }
    // A good reading after the bad ones: still processed.
    mqtt_publish(port, "bad/good", json_reading(now, 42.5).as_bytes(), 1).unwrap();
    let records = wait_for_outbox(&outbox, Duration::from_secs(30), Some(&agent), "the good reading", |r| {
        readings(r).iter().any(|(e, _, v)| e == "bad.good" && *v == 42.5)
    });
    assert_eq!(readings(&records).len(), 1, "only the good reading is a reading: {:?}", readings(&records));
    assert!(agent.try_wait().unwrap().is_none(), "agent died");

    agent.terminate().unwrap();
    let status = agent.wait_timeout(Duration::from_secs(30)).expect("agent stops on SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", agent.lines().join("\n"));
    assert_no_panic(&agent);

    // `dlq list`: one entry per bad message, with the right reason and topic.
    let cfg = config.to_str().unwrap();
    let list = stdout_of(&["dlq", "--config", cfg, "list"]);
    eprintln!("dlq list:\n{list}");
    let entries: Vec<(u64, String, String)> = list
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(3)?.to_string(), f.get(4)?.to_string()))
        })
        .collect();
    for (topic, _, reason) in &bad {
        assert!(
            entries.iter().any(|(_, r, t)| r == reason && t == topic),
            "no DLQ entry with reason {reason} for {topic}:\n{list}"
        );
    }
    assert_eq!(entries.len(), bad.len(), "one dead letter per bad message:\n{list}");

    // `dlq show ID`: the raw payload, as hex (binary) and text.
    let id_of = |topic: &str| entries.iter().find(|e| e.2 == topic).unwrap().0.to_string();
    let show = stdout_of(&["dlq", "--config", cfg, "show", &id_of("bad/random")]);
    assert!(show.contains(&hex_of(&random)), "dlq show lacks the raw payload:\n{show}");
    assert!(show.contains("undecodable"), "{show}");
    let show = stdout_of(&["dlq", "--config", cfg, "show", &id_of("bad/nanstr")]);
    assert!(show.contains(r#"\"value\": \"NaN\""#) || show.contains(r#""value": "NaN""#), "dlq show lacks the text payload:\n{show}");

    // `dlq replay` with a config that accepts 64 KiB payloads: only the oversized one decodes now.
    std::fs::write(&config, config_text(id, dir.path(), port, 65536)).unwrap();
    let replay = stdout_of(&["dlq", "--config", cfg, "replay"]);
    eprintln!("dlq replay:\n{replay}");
    assert!(replay.contains("replayed 1 "), "exactly the oversized dead letter should replay:\n{replay}");
    let list = stdout_of(&["dlq", "--config", cfg, "list"]);
    assert!(!list.contains("oversized"), "oversized entry still in the DLQ:\n{list}");
    assert_eq!(list.lines().filter(|l| !l.trim().is_empty()).count(), bad.len() - 1, "{list}");

    // Next start: the replayed reading reaches the outbox.
    let mut agent = spawn_agent(&config);
    wait_for_outbox(&outbox, Duration::from_secs(30), Some(&agent), "the replayed oversized reading", |r| {
        readings(r).iter().any(|(e, t, v)| e == "bad.big" && *t == now && *v == 7.25)
    });
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).unwrap().success());
    assert_no_panic(&agent);
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
