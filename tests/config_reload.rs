//! Config hot reload against a real Mosquitto, both ways in (SIGHUP and
//! `POST /api/config/reload`):
//!
//! - thresholds: after a reload to `alert_threshold = 0.000001` every new window is in the alert band
//!   (and raises), after reloading the old values back they are normal again — no restart, no
//!   reading lost;
//! - sink settings: the directory sink moves to another folder; what is committed after the
//!   reload lands there;
//! - an invalid file is rejected with `file:line: key` (the API's 422, the log for SIGHUP) and
//!   the running config stays;
//! - a key that needs a restart is named in the answer and not applied.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cloud_uplink::{Body, Envelope};
use support::*;
use vigil_test_harness::{http_request, Mosquitto, MosquittoOptions};

/// `(window end, band)` of `entity`'s score records.
fn bands(records: &[Envelope], entity: &str) -> BTreeMap<i64, String> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Score { entity: e, window_end_ms, band, .. } if e == entity => Some((*window_end_ms, band.clone())),
            _ => None,
        })
        .collect()
}

fn reload_api(api: std::net::SocketAddr) -> vigil_test_harness::HttpResponse {
    let auth = format!("Bearer {API_TOKEN}");
    http_request(api, "POST", "/api/config/reload", &[("Authorization", &auth)], b"").unwrap()
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle in config") + 1
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn thresholds_and_sinks_reload_without_a_restart_and_a_bad_file_changes_nothing() {
    let broker = Mosquitto::start(MosquittoOptions { max_queued_messages: Some(1_000_000), ..Default::default() }).unwrap();
    let mut plant = PlantAgent::start(&broker, "reload");
    let api = api_addr(&plant.agent);
    let original = std::fs::read_to_string(&plant.config).unwrap();
    let second = plant.dir.path().join("outbox2");
    let entity = "l1.temp";

    // Phase 1: the shipped thresholds (review 0.3, alert 0.4): a normal series stays normal.
    let n = model_warmup() + 10;
    let total = n + 30;
    let t0 = now_ms().div_euclid(1000) * 1000 - total as i64 * STEP_MS - 60_000;
    let s = series(41, t0, total, 15.0, None);
    let end = |i: usize| last_window_end(s[i - 1].0);
    publish_series(&broker, entity, &s[..n]);
    let first = wait_for_outbox(&plant.outbox, Duration::from_secs(120), Some(&plant.agent), "phase 1 scores", |r| bands(r, entity).contains_key(&end(n)));
    let b1 = bands(&first, entity);
    assert!(b1.values().all(|b| b == "normal"), "{b1:?}");

    // Phase 2 (SIGHUP): alert threshold 0, the directory sink elsewhere.
    let zero = original
        .replace("review_threshold = 0.3", "review_threshold = 0.000001")
        .replace("alert_threshold = 0.4", "alert_threshold = 0.000001")
        .replace(&q(&plant.outbox), &q(&second));
    assert_ne!(zero, original);
    write(&plant.config, &zero);
    let from = plant.agent.line_count();
    plant.agent.signal(libc::SIGHUP).unwrap();
    let (_, line) = plant.agent.wait_for_line_after(from, |l| l.contains("config reloaded"), Duration::from_secs(30)).expect("reloaded on SIGHUP");
    assert!(line.contains("alerts.alert_threshold") && line.contains("uplink.directory"), "{line}");
    publish_series(&broker, entity, &s[n..n + 10]);
    let moved = wait_for_outbox(&second, Duration::from_secs(60), Some(&plant.agent), "phase 2 scores in the new folder", |r| bands(r, entity).contains_key(&end(n + 10)));
    let b2 = bands(&moved, entity);
    let new_windows: Vec<&String> = b2.iter().filter(|(w, _)| **w > end(n)).map(|(_, b)| b).collect();
    assert_eq!(new_windows.len(), 10, "{b2:?}");
    assert!(new_windows.iter().all(|b| *b == "alert"), "{b2:?}");
    assert!(moved.iter().any(|r| matches!(&r.body, Body::Alert { entity: e, state: cloud_uplink::AlertState::Raised, .. } if e == entity)), "an alert was raised");
    // Nothing committed after the reload went to the old folder.
    let old = bands(&read_outbox(&plant.outbox), entity);
    assert!(old.keys().all(|w| *w <= end(n)), "{old:?}");

    // Phase 3: an invalid file, through the API and through SIGHUP: rejected with file:line:
    // key, the running config (threshold 0.000001, second folder) stays.
    let bad = zero.replace("alert_threshold = 0.000001", "alert_threshold = \"high\"");
    write(&plant.config, &bad);
    let resp = reload_api(api);
    assert_eq!(resp.status, 422, "{}", resp.text());
    let expected = format!("{}:{}: key `alerts.alert_threshold`", plant.config.display(), line_of(&bad, "alert_threshold ="));
    assert!(resp.text().contains(&expected), "{} does not contain {expected}", resp.text());
    let from = plant.agent.line_count();
    plant.agent.signal(libc::SIGHUP).unwrap();
    let (_, line) = plant.agent.wait_for_line_after(from, |l| l.contains("config reload rejected"), Duration::from_secs(30)).expect("rejected on SIGHUP");
    assert!(line.contains(&expected), "{line}");
    // Without the token: refused.
    assert_eq!(http_request(api, "POST", "/api/config/reload", &[], b"").unwrap().status, 401);
    publish_series(&broker, entity, &s[n + 10..n + 20]);
    let still = wait_for_outbox(&second, Duration::from_secs(60), Some(&plant.agent), "phase 3 scores", |r| bands(r, entity).contains_key(&end(n + 20)));
    let b3 = bands(&still, entity);
    assert!(b3.iter().filter(|(w, _)| **w > end(n + 10)).all(|(_, b)| b == "alert"), "{b3:?}");

    // Phase 4 (API): the original thresholds back, plus a key that needs a restart.
    let restored = zero
        .replace("review_threshold = 0.000001", "review_threshold = 0.3")
        .replace("alert_threshold = 0.000001", "alert_threshold = 0.4")
        .replace("workers = 2", "workers = 3");
    write(&plant.config, &restored);
    let resp = reload_api(api);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let outcome: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(outcome["applied"], serde_json::json!(["alerts.alert_threshold", "alerts.review_threshold"]), "{outcome}");
    assert_eq!(outcome["restart_needed"], serde_json::json!(["pipeline.workers"]), "{outcome}");
    publish_series(&broker, entity, &s[n + 20..]);
    let last = wait_for_outbox(&second, Duration::from_secs(60), Some(&plant.agent), "phase 4 scores", |r| bands(r, entity).contains_key(&end(total)));
    let b4 = bands(&last, entity);
    let after: Vec<&String> = b4.iter().filter(|(w, _)| **w > end(n + 20)).map(|(_, b)| b).collect();
    assert_eq!(after.len(), 10);
    // Back below the alert band (the windows right after the burst of zero-threshold alerts are
    // ordinary windows of the same normal series).
    assert!(after.iter().all(|b| *b == "normal"), "{b4:?}");

    // Every reading (by event time) in one of the two folders: no restart, nothing lost. Readings and
    // scores are delivered as separate per-class files, so the last readings' file may land
    // after the last score's: wait for them (nothing goes to the first folder any more).
    let before_reload = read_outbox(&plant.outbox);
    let distinct_times = |after_reload: &[Envelope]| -> std::collections::BTreeSet<i64> {
        readings(&before_reload).into_iter().chain(readings(after_reload)).filter(|(e, _, _)| e == entity).map(|(_, t, _)| t).collect()
    };
    let after_reload = wait_for_outbox(&second, Duration::from_secs(60), Some(&plant.agent), "every reading in one of the folders", |r| distinct_times(r).len() >= total);
    assert_eq!(distinct_times(&after_reload).len(), total);
    plant.agent.terminate().unwrap();
    assert!(plant.agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&plant.agent);
}
