//! Observability over the agent's local HTTP API, against a real Mosquitto:
//!
//! - after a known input (good readings with one anomaly, undecodable and incomplete
//!   messages), the scraped `/metrics` page parses with the reference Prometheus parser
//!   (`prometheus_client` in the peers venv) and its counters have exactly the expected values,
//!   cross-checked against the records in the outbox;
//! - `/health`, `/ready` and the JSON API (`/api/entities`, `/api/scores`, `/api/dlq`,
//!   `/api/state`) show that input;
//! - acknowledging an alert is refused without a token (401) and with a wrong token (403), and
//!   works with the configured one;
//! - a DLQ replay through the API on a running agent (same token rules) turns dead letters that
//!   decode with the corrected config into readings that are windowed, scored and uplinked live.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloud_uplink::{AlertState, Body};
use support::*;
use vigil_test_harness::{http_get, http_request, Mosquitto, MosquittoOptions};

fn json(resp: &vigil_test_harness::HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.text()))
}

#[test]
fn metrics_health_api_and_auth_after_a_known_input() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let plant = PlantAgent::start(&broker, "obs");
    let api = api_addr(&plant.agent);

    // Before any input: alive, ready (the MQTT ingest connection is up), counters at zero.
    assert_eq!(http_get(api, "/health").unwrap().status, 200);
    let ready = http_get(api, "/ready").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(json(&ready)["source_connected"], true);

    // --- known input ---------------------------------------------------------------------
    let warm = model_warmup();
    let n = warm + 40;
    // The spike is near the end, so the alert is still open when the input ends.
    let anomaly_at = n - 5;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    let series = series(11, t0, n, 40.0, Some(anomaly_at));
    publish_lines(port, "plant/l1/temp/value", &series.iter().map(|&(t, v)| json_reading(t, v)).collect::<Vec<_>>(), &[]);
    let undecodable: Vec<String> = (0..3).map(|i| format!("not json {i}")).collect();
    publish_lines(port, "plant/l1/bad/value", &undecodable, &[]);
    let no_value: Vec<String> = (0..2).map(|i| format!(r#"{{"ts": {}}}"#, now_ms() - i)).collect();
    publish_lines(port, "plant/l1/novalue/value", &no_value, &[]);

    let last_end = last_window_end(series.last().unwrap().0);
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(120), Some(&plant.agent), "all readings, 5 dead letters and the last score", |r| {
        readings(r).len() >= n
            && r.iter().filter(|e| matches!(e.body, Body::Dlq { .. })).count() >= 5
            && scores(r).iter().any(|(e, w, _)| e == "l1.temp" && *w == last_end)
    });
    let mut bands: BTreeMap<String, u64> = BTreeMap::new();
    let (mut raised, mut cleared) = (0, 0);
    for r in &records {
        match &r.body {
            Body::Score { band, .. } => *bands.entry(band.clone()).or_default() += 1,
            Body::Alert { state: AlertState::Raised, .. } => raised += 1,
            Body::Alert { state: AlertState::Cleared, .. } => cleared += 1,
            _ => {}
        }
    }
    let scored: u64 = bands.values().sum();
    assert!(raised >= 1, "the anomaly raised no alert: {}", summary(&records));

    // --- /metrics --------------------------------------------------------------------------
    // The counters are updated right after the commit that the outbox files reflect; wait (a
    // bounded poll) until the reading counter caught up, then everything below is final.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (page, samples) = loop {
        let resp = http_get(api, "/metrics").unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"), "{:?}", resp.headers);
        let samples = parse_prometheus(&resp.text());
        if prom_value(&samples, "vigil_readings_in_total", &[("source", "mqtt")]) == Some(n as f64) || Instant::now() > deadline {
            break (resp.text(), samples);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let v = |name: &str, labels: &[(&str, &str)]| {
        prom_value(&samples, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{page}"))
    };
    let (name, version, sha) = model_identity();
    let expect: Vec<(&str, Vec<(&str, &str)>, f64)> = vec![
        ("vigil_readings_in_total", vec![("source", "mqtt")], n as f64),
        ("vigil_readings_in_total", vec![("source", "simulator")], 0.0),
        ("vigil_mqtt_messages_total", vec![], (n + 5) as f64),
        ("vigil_dlq_records_total", vec![("reason", "undecodable")], 3.0),
        ("vigil_dlq_records_total", vec![("reason", "missing_field")], 2.0),
        ("vigil_dlq_records_total", vec![("reason", "late")], 0.0),
        ("vigil_dlq_records_total", vec![("reason", "timestamp_skew")], 0.0),
        ("vigil_late_readings_total", vec![], 0.0),
        ("vigil_windows_scored_total", vec![], scored as f64),
        ("vigil_scores_total", vec![("band", "normal")], bands.get("normal").copied().unwrap_or(0) as f64),
        ("vigil_scores_total", vec![("band", "review")], bands.get("review").copied().unwrap_or(0) as f64),
        ("vigil_scores_total", vec![("band", "alert")], bands.get("alert").copied().unwrap_or(0) as f64),
        ("vigil_alerts_total", vec![("state", "raised")], raised as f64),
        ("vigil_alerts_total", vec![("state", "cleared")], cleared as f64),
        ("vigil_latency_seconds_count", vec![("path", "ingest_to_score")], scored as f64),
        ("vigil_latency_seconds_count", vec![("path", "event_to_score")], scored as f64),
        ("vigil_latency_seconds_count", vec![("path", "ingest_to_alert")], raised as f64),
        ("vigil_inference_batch_windows_sum", vec![], scored as f64),
        ("vigil_mqtt_connected", vec![("connection", "ingest")], 1.0),
        ("vigil_mqtt_connected", vec![("connection", "publish")], 1.0),
        ("vigil_model_info", vec![("name", &name), ("version", &version), ("sha256", &sha)], 1.0),
        ("vigil_model_threshold", vec![("band", "alert")], 0.4),
        ("vigil_health_alerts_total", vec![("kind", "broker_drops")], 0.0),
    ];
    let mut wrong = Vec::new();
    for (name, labels, want) in &expect {
        let got = v(name, labels);
        if got != *want {
            wrong.push(format!("{name}{labels:?} = {got}, expected {want}"));
        }
    }
    assert!(wrong.is_empty(), "wrong metric values:\n{}\n--- page ---\n{page}", wrong.join("\n"));
    // Histograms are cumulative and end in +Inf = _count.
    let inf = v("vigil_stage_seconds_bucket", &[("stage", "commit"), ("le", "+Inf")]);
    assert_eq!(inf, v("vigil_stage_seconds_count", &[("stage", "commit")]));
    assert!(inf >= 1.0);
    assert!(v("vigil_windows_emitted_total", &[]) >= scored as f64);
    assert!(v("vigil_sink_delivered_records_total", &[("sink", "directory")]) >= (n + 5) as f64);
    assert!(v("vigil_outbox_records", &[("class", "reading")]) >= 0.0);
    let rss = v("process_resident_memory_bytes", &[]);
    assert!(rss > 1e6 && rss < 1e9, "RSS {rss}");
    assert!(v("process_cpu_seconds_total", &[]) > 0.0);
    for s in &samples {
        assert!(s.name.starts_with("vigil_") || s.name.starts_with("process_"), "unprefixed metric {}", s.name);
    }

    // --- JSON API ------------------------------------------------------------------------
    let entities = json(&http_get(api, "/api/entities").unwrap());
    let e = entities.as_array().unwrap().iter().find(|e| e["entity"] == "l1.temp").unwrap_or_else(|| panic!("{entities}"));
    assert_eq!(e["last_value"].as_f64().unwrap(), series.last().unwrap().1, "{e}");
    assert_eq!(e["last_event_ms"].as_i64().unwrap(), series.last().unwrap().0, "{e}");
    assert_eq!(e["score"]["window_end_ms"].as_i64().unwrap(), last_end, "{e}");
    assert!(e["features"]["count"].as_u64().unwrap() > 0, "{e}");
    assert!(!e["values"].as_array().unwrap().is_empty() && !e["scores"].as_array().unwrap().is_empty(), "{e}");
    assert_eq!(e["alert"], true, "{e}");
    let recent = json(&http_get(api, "/api/scores?limit=5").unwrap());
    assert_eq!(recent.as_array().unwrap().len(), 5);
    assert_eq!(recent[0]["window_end_ms"].as_i64().unwrap(), last_end);
    let dlq = json(&http_get(api, "/api/dlq").unwrap());
    assert_eq!(dlq["stored"], 5, "{dlq}");
    assert_eq!(dlq["since_start"]["undecodable"], 3, "{dlq}");
    assert_eq!(dlq["latest"][0]["reason"], "missing_field", "{dlq}");
    let state = json(&http_get(api, "/api/state").unwrap());
    assert_eq!((state["agent"].as_str(), state["entity_count"].as_u64()), (Some("obs"), Some(1)), "{state}");
    assert_eq!(state["uplink"]["sinks"][0]["name"], "directory", "{state}");

    // --- acknowledging needs the token --------------------------------------------------
    let body = br#"{"entity": "l1.temp", "by": "shift lead"}"#;
    let no_token = http_request(api, "POST", "/api/alerts/ack", &[("Content-Type", "application/json")], body).unwrap();
    assert_eq!(no_token.status, 401, "{}", no_token.text());
    let wrong_token = http_request(api, "POST", "/api/alerts/ack", &[("Authorization", "Bearer not-the-token")], body).unwrap();
    assert_eq!(wrong_token.status, 403, "{}", wrong_token.text());
    let not_bearer = http_request(api, "POST", "/api/alerts/ack", &[("Authorization", API_TOKEN)], body).unwrap();
    assert_eq!(not_bearer.status, 401, "{}", not_bearer.text());
    let open = json(&http_get(api, "/api/alerts").unwrap());
    assert!(open["open"][0]["acked_by"].is_null(), "refused requests changed nothing: {open}");
    let auth = format!("Bearer {API_TOKEN}");
    let ok = http_request(api, "POST", "/api/alerts/ack", &[("Authorization", &auth)], body).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let open = json(&http_get(api, "/api/alerts").unwrap());
    assert_eq!(open["open"][0]["entity"], "l1.temp", "{open}");
    assert_eq!(open["open"][0]["acked_by"], "shift lead", "{open}");
    let unknown = http_request(api, "POST", "/api/alerts/ack", &[("Authorization", &auth)], br#"{"entity": "nope"}"#).unwrap();
    assert_eq!(unknown.status, 404);
    // The token never reaches the log.
    assert!(!plant.agent.lines().iter().any(|l| l.contains(API_TOKEN)), "token in the log");

    let mut agent = plant.agent;
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&agent);
}

/// A sensor not yet in `validation.known_entities` publishes: every message is dead-lettered
/// (`unknown_entity`). The config is corrected and the agent restarted; `POST /api/dlq/replay`
/// (refused without / with a wrong token, changing nothing) replays them while the agent runs:
/// the answer counts them, the readings reach the outbox and are windowed and scored live (the
/// score of the last window appears), the DLQ keeps only the message that still does not
/// decode (with its new reason), and `/metrics` counts the replay.
#[test]
fn dlq_replay_through_the_api_while_running() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let plant = PlantAgent::start_with(&broker, "dlqreplay", |config| format!("{config}\n[validation]\nknown_entities = [\"l1.temp\"]\n"));
    let n = model_warmup() + 20;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    let series = series(23, t0, n, 55.0, None);
    publish_series(&broker, "l2.flow", &series);
    publish_lines(port, "plant/l2/flow/value", &["not json".to_string()], &[]);
    wait_for_outbox(&plant.outbox, Duration::from_secs(60), Some(&plant.agent), "every message dead-lettered", |r| {
        r.iter().filter(|e| matches!(e.body, Body::Dlq { .. })).count() >= n + 1
    });
    let api = api_addr(&plant.agent);
    let dlq = json(&http_get(api, "/api/dlq").unwrap());
    assert_eq!(dlq["since_start"]["unknown_entity"], n, "{dlq}");
    let mut agent = plant.agent;
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert!(readings(&read_outbox(&plant.outbox)).is_empty(), "no reading before the replay");

    // The corrected config; the agent runs (and ingests) while the DLQ is replayed.
    let text = std::fs::read_to_string(&plant.config).unwrap().replace(r#"known_entities = ["l1.temp"]"#, r#"known_entities = ["l1.temp", "l2.flow"]"#);
    std::fs::write(&plant.config, text).unwrap();
    let agent = spawn_agent(&plant.config);
    let api = api_addr(&agent);
    let dlq = json(&http_get(api, "/api/dlq").unwrap());
    assert_eq!(dlq["stored"], n + 1, "dead letters survive the restart: {dlq}");

    let none = http_request(api, "POST", "/api/dlq/replay", &[], b"").unwrap();
    assert_eq!(none.status, 401, "{}", none.text());
    let wrong = http_request(api, "POST", "/api/dlq/replay", &[("Authorization", "Bearer not-the-token")], b"").unwrap();
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    assert_eq!(json(&http_get(api, "/api/dlq").unwrap())["stored"], n + 1, "refused requests replay nothing");

    let auth = format!("Bearer {API_TOKEN}");
    let bad = http_request(api, "POST", "/api/dlq/replay", &[("Authorization", &auth)], b"{\"ids\": 1}").unwrap();
    assert_eq!(bad.status, 400, "{}", bad.text());
    let ok = http_request(api, "POST", "/api/dlq/replay", &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let outcome = json(&ok);
    assert_eq!(outcome, serde_json::json!({"replayed": n, "readings": n, "still_rejected": 1, "kept": 0}));

    // Live: the replayed readings are uplinked, windowed and scored by the running agent.
    let last_end = last_window_end(series.last().unwrap().0);
    // Readings and scores reach the outbox from different stages (the commit log's forwarder,
    // the inference stage), in no fixed order between them: await both.
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(60), Some(&agent), "the replayed readings and their last score", |r| {
        scores(r).iter().any(|(e, w, _)| e == "l2.flow" && *w == last_end)
            && readings(r).iter().filter(|(e, _, _)| e == "l2.flow").count() >= series.len()
    });
    let replayed: Vec<(i64, f64)> = readings(&records).into_iter().filter(|(e, _, _)| e == "l2.flow").map(|(_, t, v)| (t, v)).collect();
    assert_eq!(replayed, series, "every dead letter became its reading, once");
    let dlq = json(&http_get(api, "/api/dlq").unwrap());
    assert_eq!(dlq["stored"], 1, "{dlq}");
    assert_eq!(dlq["latest"][0]["reason"], "undecodable", "{dlq}");
    let samples = parse_prometheus(&http_get(api, "/metrics").unwrap().text());
    assert_eq!(prom_value(&samples, "vigil_dlq_replayed_total", &[]), Some(n as f64));
    assert_eq!(prom_value(&samples, "vigil_readings_in_total", &[("source", "mqtt")]), Some(n as f64));

    // A second replay finds nothing new to replay.
    let again = json(&http_request(api, "POST", "/api/dlq/replay", &[("Authorization", &auth)], b"{}").unwrap());
    assert_eq!(again["replayed"], 0, "{again}");
    let mut agent = agent;
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&agent);
}

/// An acknowledgement survives a restart: the alert is raised, acknowledged through the API
/// (committed to `alert_ack` before the answer), the agent is stopped and started again, and
/// the open alert is back in `/api/alerts` with the same acknowledgement.
#[test]
fn acknowledgements_survive_a_restart() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let plant = PlantAgent::start(&broker, "ackrestart");
    let api = api_addr(&plant.agent);
    let n = model_warmup() + 30;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    // The spike is near the end, so the alert is still open when the input ends.
    publish_series(&broker, "l3.press", &series(31, t0, n, 20.0, Some(n - 5)));
    plant.agent.wait_for_line(|l| l.starts_with("ALERT RAISED") && l.contains("l3.press"), Duration::from_secs(60)).expect("an alert");
    let auth = format!("Bearer {API_TOKEN}");
    let ok = http_request(api, "POST", "/api/alerts/ack", &[("Authorization", &auth)], br#"{"entity": "l3.press", "by": "night shift"}"#).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let before = json(&http_get(api, "/api/alerts").unwrap())["open"][0].clone();
    assert_eq!((before["entity"].as_str(), before["acked_by"].as_str()), (Some("l3.press"), Some("night shift")), "{before}");

    let mut agent = plant.agent;
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    let mut agent = spawn_agent(&plant.config);
    let api = api_addr(&agent);
    let after = json(&http_get(api, "/api/alerts").unwrap());
    assert_eq!(after["open"].as_array().map(Vec::len), Some(1), "{after}");
    assert_eq!(after["open"][0], before, "the open alert and its acknowledgement are restored as they were");
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&agent);
}

/// `agent.log_format = "json"`: every log line is one JSON object with a timestamp, a level,
/// a target and the event's fields (the alert warning carries the entity, and its `alert` span
/// the entity and the reading's commit-log seq); standard output's
/// `ALERT` lines are unchanged; the API token never appears.
#[test]
fn json_log_lines() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    let outbox = dir.path().join("outbox");
    let base = base_config("jsonlog", &dir.path().join("data"), &outbox).replace("log = \"info\"", "log = \"info\"\nlog_format = \"json\"");
    std::fs::write(&config, format!("{base}\n{}\n[[ingest.mqtt]]\ntopic = \"plant/{{line}}/{{sensor}}/value\"\nentity = \"{{line}}.{{sensor}}\"\n", mqtt_plain(port))).unwrap();
    let from = broker.log_line_count();
    let mut agent = spawn_agent(&config);
    agent.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent connects");
    wait_for_subacks(&broker, from, "vigil-jsonlog", 1);

    let n = model_warmup() + 30;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    let s = series(5, t0, n, 10.0, Some(n - 5));
    publish_lines(port, "plant/l9/temp/value", &s.iter().map(|&(t, v)| json_reading(t, v)).collect::<Vec<_>>(), &[]);
    agent.wait_for_line(|l| l.starts_with("ALERT RAISED"), Duration::from_secs(60)).expect("an alert");
    let warn = agent.wait_for_line(|l| l.contains("\"level\":\"WARN\"") && l.contains("l9.temp"), Duration::from_secs(10)).expect("alert warning in the log");
    let v: serde_json::Value = serde_json::from_str(&warn).unwrap();
    assert_eq!(v["entity"], "l9.temp", "{v}");
    // The event's span: the alert, with the entity and the commit-log seq of the reading that
    // closed the alerting window (one of the n readings, seqs 1..=n).
    assert_eq!((v["span"]["name"].as_str(), v["span"]["entity"].as_str(), v["span"]["state"].as_str()), (Some("alert"), Some("l9.temp"), Some("raised")), "{v}");
    let seq = v["span"]["seq"].as_u64().unwrap_or_else(|| panic!("no seq in the span: {v}"));
    assert!((1..=n as u64).contains(&seq), "{v}");
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    let lines = agent.lines();
    let mut json_lines = 0;
    for l in &lines {
        if l.starts_with("ALERT ") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string() && v["message"].is_string(), "{l}");
        json_lines += 1;
    }
    assert!(json_lines >= 4, "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains(API_TOKEN)), "token in the log");
    assert!(lines.iter().any(|l| l.contains("HTTP API listening")));
}

/// Model drift. Phase 1: the built-in plant simulator (data like the model's training data)
/// keeps the live input and score distributions near the manifest's: PSI below
/// `alerts.drift_psi` (0.35 here), no alert. Phase 2: sensors with much smoother signals than anything the
/// model was calibrated on (slow sine, tiny noise) arrive over MQTT; the score distribution
/// shifts, `vigil_model_drift_psi` rises above the threshold and a `model_drift` health alert
/// is raised (metrics, JSON API, log).
#[test]
fn drift_psi_rises_and_alerts_when_inputs_change() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    let base = base_config("drift", &dir.path().join("data"), &dir.path().join("outbox"))
        // The simulated plant's score PSI settles at ~0.22 against univariate-ae 1.1.0's held-out
        // distribution (higher in the first few hundred windows after warm-up): 0.35 separates
        // it from a real shift.
        .replace("cooldown_s = 60\n", "cooldown_s = 60\ndrift_psi = 0.35\ndrift_min_windows = 1000\n");
    // 5 machines × 3 sensors, 600 simulated seconds at 1 Hz, 100× real time, no anomalies.
    let sim = "[ingest.simulator]\nmachines = 5\nperiod_ms = 1000\nspeedup = 100.0\nanomalies = false\nduration_s = 600\n";
    std::fs::write(&config, format!("{base}\n{}\n{sim}\n[[ingest.mqtt]]\ntopic = \"plant/{{line}}/{{sensor}}/value\"\nentity = \"{{line}}.{{sensor}}\"\n", mqtt_plain(port))).unwrap();
    let from = broker.log_line_count();
    let mut agent = spawn_agent(&config);
    let api = api_addr(&agent);
    agent.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent connects");
    wait_for_subacks(&broker, from, "vigil-drift", 1);

    let psi = |feature: &str| -> (Option<f64>, f64) {
        let samples = parse_prometheus(&http_get(api, "/metrics").unwrap().text());
        (
            prom_value(&samples, "vigil_model_drift_psi", &[("feature", feature)]),
            prom_value(&samples, "vigil_model_drift_windows", &[("feature", feature)]).unwrap_or(0.0),
        )
    };
    let wait_windows = |want: f64| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while psi("score").1 < want {
            assert!(Instant::now() < deadline, "scored windows stayed below {want}: {:?}", psi("score"));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Phase 1: the simulator runs to its end (15 sensors × (600 − warm-up) s / 4 s hop).
    agent.wait_for_line(|l| l.contains("plant simulator finished"), Duration::from_secs(60)).expect("simulator finishes");
    wait_windows(1000.0);
    let (normal_input, normal_score) = (psi("input_z").0.expect("input PSI reported"), psi("score").0.expect("score PSI reported"));
    let normal_windows = psi("score").1;
    eprintln!("simulated plant: PSI input_z {normal_input:.3}, score {normal_score:.3} over {normal_windows} windows");
    assert!(normal_input < 0.35 && normal_score < 0.35, "training-like data must not look drifted: {normal_input} {normal_score}");
    let health: serde_json::Value = serde_json::from_slice(&http_get(api, "/api/alerts").unwrap().body).unwrap();
    assert!(health["health"].as_array().unwrap().is_empty(), "{health}");

    // Phase 2: smooth sensors, as many windows again.
    let warm = model_warmup();
    let n = warm + 350;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    for (i, base) in [20.0, 60.0, 5.0, 12.0].iter().enumerate() {
        let s = series(40 + i as u64, t0, n, *base, None);
        publish_lines(port, &format!("plant/n{i}/temp/value"), &s.iter().map(|&(t, v)| json_reading(t, v)).collect::<Vec<_>>(), &[]);
    }
    wait_windows(normal_windows + 1200.0);
    let (drift_input, drift_score) = (psi("input_z").0.unwrap(), psi("score").0.unwrap());
    eprintln!("with smooth sensors: PSI input_z {drift_input:.3}, score {drift_score:.3}");
    assert!(drift_score > 0.35, "drift not detected: {drift_input} {drift_score}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts: serde_json::Value = serde_json::from_slice(&http_get(api, "/api/alerts").unwrap().body).unwrap();
        if alerts["health"].as_array().unwrap().iter().any(|e| e["kind"] == "model_drift") {
            break;
        }
        assert!(Instant::now() < deadline, "no model_drift health alert: {alerts}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let samples = parse_prometheus(&http_get(api, "/metrics").unwrap().text());
    assert_eq!(prom_value(&samples, "vigil_health_alerts_total", &[("kind", "model_drift")]), Some(1.0));
    let state: serde_json::Value = serde_json::from_slice(&http_get(api, "/api/state").unwrap().body).unwrap();
    assert_eq!(state["drift"].as_array().unwrap().len(), 2, "{}", state["drift"]);
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert!(agent.lines().iter().any(|l| l.contains("agent health alert: model univariate-ae") && l.contains("score distribution drifted")));
}
