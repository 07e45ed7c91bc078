//! The human review queue against a real Mosquitto: review-band windows appear on
//! `GET /api/review` (entity, window, score, model); a reviewer labels one through the
//! token-protected `POST /api/review/{id}` (401 without a token, 403 with a wrong one, 400 for a
//! bad body, 404 for an unknown item); the label is uplinked as a `review_label` record (directory
//! sink) with the window and the model; after a restart the labelled item is no longer pending
//! and the unlabelled one still is.

mod support;

use std::time::{Duration, Instant};

use cloud_uplink::Body;
use support::*;
use vigil_test_harness::{http_get, http_request, Mosquitto, MosquittoOptions};

fn json(resp: &vigil_test_harness::HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.text()))
}

/// The pending items of `GET /api/review`.
fn pending(api: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let resp = http_get(api, "/api/review").unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    json(&resp)["pending"].as_array().cloned().unwrap_or_else(|| panic!("no pending array: {}", resp.text()))
}

/// The first pending item of `entity`.
fn item_of<'a>(items: &'a [serde_json::Value], entity: &str) -> Option<&'a serde_json::Value> {
    items.iter().find(|i| i["entity"] == entity)
}

#[test]
fn review_items_are_labelled_uplinked_and_survive_a_restart() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    // The test anomaly scores above the review threshold (0.3) and, with this alert threshold,
    // never reaches the alert band (score = e / (e + scale) stays below 1): a review event.
    let plant = PlantAgent::start_with(&broker, "reviewq", |c| c.replace("alert_threshold = 0.4", "alert_threshold = 0.999999"));
    let api = api_addr(&plant.agent);
    let n = model_warmup() + 30;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    publish_series(&broker, "r1.temp", &series(41, t0, n, 20.0, Some(n - 10)));
    publish_series(&broker, "r2.temp", &series(42, t0, n, 30.0, Some(n - 10)));

    // Await both entities' review events in the queue.
    let deadline = Instant::now() + Duration::from_secs(120);
    let items = loop {
        let items = pending(api);
        if item_of(&items, "r1.temp").is_some() && item_of(&items, "r2.temp").is_some() {
            break items;
        }
        assert!(Instant::now() < deadline, "no review items for both entities: {items:?}\n{}", plant.agent.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    };
    let (name, version, sha256) = model_identity();
    for e in ["r1.temp", "r2.temp"] {
        let i = item_of(&items, e).unwrap();
        let score = i["score"].as_f64().unwrap_or_else(|| panic!("{i}"));
        assert!((0.3..0.999999).contains(&score), "review-band score: {i}");
        assert!(i["window_end_ms"].as_i64().is_some_and(|w| w > t0), "{i}");
        assert_eq!((i["model"]["name"].as_str(), i["model"]["version"].as_str(), i["model"]["sha256"].as_str()), (Some(&*name), Some(&*version), Some(&*sha256)), "{i}");
        assert!(i["label"].is_null(), "{i}");
    }
    let r1 = item_of(&items, "r1.temp").unwrap().clone();
    let r2 = item_of(&items, "r2.temp").unwrap().clone();
    let r1_id = r1["id"].as_u64().unwrap();
    let path = format!("/api/review/{r1_id}");
    let body = br#"{"label": "anomaly", "by": "night shift"}"#;

    // Auth and input errors change nothing.
    let auth = format!("Bearer {API_TOKEN}");
    let no_token = http_request(api, "POST", &path, &[], body).unwrap();
    assert_eq!(no_token.status, 401, "{}", no_token.text());
    let wrong = http_request(api, "POST", &path, &[("Authorization", "Bearer nope")], body).unwrap();
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    for bad in [&br#"{"label": "maybe"}"#[..], b"not json", br#"{"by": "x"}"#] {
        let r = http_request(api, "POST", &path, &[("Authorization", &auth)], bad).unwrap();
        assert_eq!(r.status, 400, "{}: {}", String::from_utf8_lossy(bad), r.text());
    }
    let unknown = http_request(api, "POST", "/api/review/999999", &[("Authorization", &auth)], body).unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert!(item_of(&pending(api), "r1.temp").is_some(), "a refused label left the item pending");

    let ok = http_request(api, "POST", &path, &[("Authorization", &auth)], body).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(json(&ok)["label"]["verdict"], "anomaly", "{}", ok.text());
    let now_pending = pending(api);
    assert!(!now_pending.iter().any(|i| i["id"] == r1["id"]), "labelled item still pending: {now_pending:?}");
    assert!(now_pending.iter().any(|i| i["id"] == r2["id"]), "{now_pending:?}");

    // The label is uplinked with its window and model.
    let r1_window = r1["window_end_ms"].as_i64().unwrap();
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(60), Some(&plant.agent), "the review_label record", |r| {
        r.iter().any(|e| matches!(&e.body, Body::ReviewLabel { .. }))
    });
    let labels: Vec<_> = records.iter().filter(|e| matches!(&e.body, Body::ReviewLabel { .. })).collect();
    assert_eq!(labels.len(), 1, "{labels:?}");
    let Body::ReviewLabel { entity, window_end_ms, score, model, label, by, .. } = &labels[0].body else { unreachable!() };
    assert_eq!((entity.as_str(), *window_end_ms, label.as_str(), by.as_str()), ("r1.temp", r1_window, "anomaly", "night shift"));
    assert_eq!(Some(*score), r1["score"].as_f64());
    assert_eq!((&model.name, &model.version, &model.sha256), (&name, &version, &sha256));
    assert_eq!(kind(labels[0]), "alert", "review labels drain with the alert class");
    let samples = parse_prometheus(&http_get(api, "/metrics").unwrap().text());
    assert_eq!(prom_value(&samples, "vigil_review_labels_total", &[]), Some(1.0));
    assert_eq!(prom_value(&samples, "vigil_review_queue_dropped_total", &[]), Some(0.0));

    // Restart: the labelled item stays labelled, the unlabelled one pending.
    let mut agent = plant.agent;
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    let mut agent = spawn_agent(&plant.config);
    let api = api_addr(&agent);
    let after = pending(api);
    assert!(!after.iter().any(|i| i["id"] == r1["id"]), "labelled item pending again after a restart: {after:?}");
    let r2_after = after.iter().find(|i| i["id"] == r2["id"]).unwrap_or_else(|| panic!("unlabelled item lost in the restart: {after:?}"));
    assert_eq!(r2_after, &r2, "the pending item is restored as it was");
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&agent);
}
