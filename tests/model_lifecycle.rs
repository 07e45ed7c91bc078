//! Model lifecycle against a real Mosquitto, with the two shipped versions of
//! `univariate-ae` (1.1.0: warm-up 256, noise z-score; 1.0.0: warm-up 64, EWMA z-score):
//!
//! - swap under load: readings stream in while 1.0.0 is uploaded through the API as the active
//!   model; every window past the warm-up gets exactly one score, and the model version on the
//!   scores switches at exactly one point (per entity and in commit order);
//! - shadow: a version dropped into the watched registry scores every window beside the active
//!   model (`shadow_score` records for exactly the scored windows), is compared on the API and
//!   in the metrics, and never raises an alert although its scores reach the alert band;
//! - canary: the candidate decides for the entities of its stable-hash cohort (the fraction
//!   within tolerance of the config), and the same entities after a restart;
//! - broken candidates: a corrupted model file (upload) and a wrong input shape (registry
//!   drop) are refused with the reason; a candidate over its latency budget is demoted — the
//!   "slow" model is the real 1.0.0 under a configured budget of 0.001 µs per window, which no
//!   model meets (a budget is the only deterministic way to make a model too slow here). The
//!   active model keeps scoring throughout.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cloud_uplink::{Body, Envelope};
use support::*;
use vigil_test_harness::{http_get, http_request, Mosquitto, MosquittoOptions};

/// A broker that queues whatever the tests publish faster than the agent takes it (the
/// default queue of 1000 messages drops the rest).
fn broker_options() -> MosquittoOptions<'static> {
    MosquittoOptions { max_queued_messages: Some(1_000_000), ..Default::default() }
}

fn shipped(version: &str) -> PathBuf {
    repo_root().join("models/univariate-ae").join(version)
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn sha_of(version: &str) -> String {
    manifest(&shipped(version))["sha256"].as_str().unwrap().to_string()
}

fn warmup_of(version: &str) -> usize {
    manifest(&shipped(version))["normalisation"]["warmup"].as_u64().unwrap() as usize
}

fn json(resp: &vigil_test_harness::HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", resp.status, resp.text()))
}

/// An agent running 1.1.0 with a registry at `registry` and `[models]` settings `models`.
fn start(broker: &Mosquitto, id: &str, registry: &Path, models: &str) -> PlantAgent {
    let active = q(shipped("1.1.0"));
    let registry = q(registry);
    PlantAgent::start_with(broker, id, |text| {
        let text = text.replace(&format!("model_dir = {}", q(model_dir())), &format!("model_dir = {active}"));
        format!("{text}\n[models]\nregistry = {registry}\nscan_interval_ms = 100\n{models}\n")
    })
}

/// `POST /api/models` body for the files of `dir`, with `edit` applied to the model bytes.
fn upload_body(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut model = std::fs::read(dir.join("model.tflite")).unwrap();
    edit(&mut model);
    let golden: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap()).unwrap();
    serde_json::to_vec(&serde_json::json!({"manifest": manifest(dir), "model_hex": hex::encode(model), "golden": golden})).unwrap()
}

fn upload(api: std::net::SocketAddr, mode: &str, body: &[u8]) -> vigil_test_harness::HttpResponse {
    let auth = format!("Bearer {API_TOKEN}");
    http_request(api, "POST", &format!("/api/models?mode={mode}"), &[("Authorization", &auth), ("Content-Type", "application/json")], body).unwrap()
}

/// Copies a version folder into the registry the way an operator should: under a hidden name,
/// then renamed into place. `edit` may change the copy first.
fn drop_into_registry(registry: &Path, from: &Path, version: &str, edit: impl FnOnce(&Path)) {
    let staging = registry.join(format!(".copy-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    for f in ["manifest.json", "model.tflite", "golden.json"] {
        std::fs::copy(from.join(f), staging.join(f)).unwrap();
    }
    edit(&staging);
    std::fs::create_dir_all(registry.join("univariate-ae")).unwrap();
    std::fs::rename(&staging, registry.join("univariate-ae").join(version)).unwrap();
}

/// `(seq, event, version, mode, message)` of every `model_event` record.
fn model_events(records: &[Envelope]) -> Vec<(u64, String, String, String, String)> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            Body::ModelEvent { event, model, mode, message } => Some((r.seq, event.clone(), model.version.clone(), mode.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

/// `(seq, entity, window end, model version, band)` of every score record.
fn deciding_scores(records: &[Envelope]) -> Vec<(u64, String, i64, String, String)> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Score { entity, window_end_ms, model, band, .. } => Some((r.seq, entity.clone(), *window_end_ms, model.version.clone(), band.clone())),
            _ => None,
        })
        .collect()
}

/// `(seq, entity, window end, model version, band, mode)` of every shadow score record.
fn shadow_scores(records: &[Envelope]) -> Vec<(u64, String, i64, String, String, String)> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            Body::ShadowScore { entity, window_end_ms, model, band, mode, .. } => {
                Some((r.seq, entity.clone(), *window_end_ms, model.version.clone(), band.clone(), mode.clone()))
            }
            _ => None,
        })
        .collect()
}

fn has_last_scores(records: &[Envelope], last: &BTreeMap<String, i64>) -> bool {
    let sc = scores(records);
    last.iter().all(|(e, end)| sc.iter().any(|(se, w, _)| se == e && w == end))
}

fn stop(plant: &mut PlantAgent) {
    plant.agent.terminate().unwrap();
    let status = plant.agent.wait_timeout(Duration::from_secs(30)).expect("agent stops on SIGTERM");
    assert!(status.success(), "agent exit status {status}");
    assert_no_panic(&plant.agent);
}

#[test]
fn swap_under_load_switches_the_model_version_at_one_point() {
    let broker = Mosquitto::start(broker_options()).unwrap();
    let port = broker.plain_port();
    let registry = tempfile::tempdir().unwrap();
    let mut plant = start(&broker, "swap", registry.path(), "deploy = \"shadow\"");
    let api = api_addr(&plant.agent);

    let entities = ["l1.a", "l1.b", "l2.a", "l2.b"];
    let max_n = 4000;
    let t0 = now_ms().div_euclid(1000) * 1000 - max_n as i64 * STEP_MS - 60_000;
    let all: Vec<Vec<(i64, f64)>> = (0..entities.len()).map(|k| series(100 + k as u64, t0, max_n, 20.0 + k as f64, None)).collect();
    let swapped = AtomicBool::new(false);
    let chunk = 16;

    let published = std::thread::scope(|scope| {
        // Streams readings in chunks until 8 chunks after the swap (never pausing for it).
        let publisher = scope.spawn(|| {
            let (mut i, mut after) = (0, 0);
            while i + chunk <= max_n {
                for (e, s) in entities.iter().zip(&all) {
                    let lines: Vec<String> = s[i..i + chunk].iter().map(|&(t, v)| json_reading(t, v)).collect();
                    publish_lines(port, &format!("plant/{}/value", e.replace('.', "/")), &lines, &[]);
                }
                i += chunk;
                if swapped.load(Ordering::SeqCst) {
                    after += 1;
                    if after == 8 {
                        return (i, true);
                    }
                }
            }
            (i, false)
        });
        // Once every entity has 1.1.0 scores, upload 1.0.0 as the active model.
        wait_for_outbox(&plant.outbox, Duration::from_secs(120), Some(&plant.agent), "a score for every entity", |r| {
            let sc = scores(r);
            entities.iter().all(|e| sc.iter().any(|(se, _, _)| se == e))
        });
        let resp = upload(api, "active", &upload_body(&shipped("1.0.0"), |_| {}));
        assert_eq!(resp.status, 200, "{}", resp.text());
        let view = json(&resp);
        assert_eq!(view["active"]["version"], "1.0.0", "{view}");
        assert!(view["candidate"].is_null(), "{view}");
        swapped.store(true, Ordering::SeqCst);
        publisher.join().unwrap()
    });
    let (n, during) = published;
    assert!(during, "the publisher ran out of readings before the swap: the test did not swap under load");
    eprintln!("published {n} readings per entity");

    let last: BTreeMap<String, i64> = entities.iter().map(|e| (e.to_string(), last_window_end(t0 + (n as i64 - 1) * STEP_MS))).collect();
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(180), Some(&plant.agent), "every reading and the last scores", |r| {
        readings(r).len() >= n * entities.len() && has_last_scores(r, &last)
    });
    assert_eq!(readings(&records).len(), n * entities.len(), "every reading exactly once");

    let sc = deciding_scores(&records);
    for e in entities {
        let mut mine: Vec<&(u64, String, i64, String, String)> = sc.iter().filter(|s| s.1 == e).collect();
        mine.sort_by_key(|s| s.2);
        // Exactly one score per window, no gaps from the first scored window to the last.
        let ends: Vec<i64> = mine.iter().map(|s| s.2).collect();
        let expected: Vec<i64> = (0..).map(|k| ends[0] + k * HOP_MS).take_while(|w| *w <= last[e]).collect();
        assert_eq!(ends, expected, "{e}: one score per window");
        // 1.1.0 first, then 1.0.0: one switch.
        let versions: Vec<&str> = mine.iter().map(|s| s.3.as_str()).collect();
        let switch = versions.iter().position(|v| *v == "1.0.0").unwrap_or_else(|| panic!("{e}: no 1.0.0 score"));
        assert!(switch > 0, "{e}: no 1.1.0 score before the swap");
        assert!(versions[..switch].iter().all(|v| *v == "1.1.0") && versions[switch..].iter().all(|v| *v == "1.0.0"), "{e}: {versions:?}");
        eprintln!("{e}: {} windows by 1.1.0, then {} by 1.0.0", switch, versions.len() - switch);
    }
    // In commit order too: every 1.1.0 score before every 1.0.0 score.
    let last_old = sc.iter().filter(|s| s.3 == "1.1.0").map(|s| s.0).max().unwrap();
    let first_new = sc.iter().filter(|s| s.3 == "1.0.0").map(|s| s.0).min().unwrap();
    assert!(last_old < first_new, "versions interleave in commit order: 1.1.0 up to seq {last_old}, 1.0.0 from {first_new}");
    assert!(shadow_scores(&records).is_empty(), "no candidate, no shadow scores");
    let events = model_events(&records);
    assert!(events.iter().any(|e| e.1 == "deployed" && e.2 == "1.0.0" && e.3 == "active"), "{events:?}");
    // Uploaded into the registry, next to nothing else.
    assert!(registry.path().join("univariate-ae/1.0.0/model.tflite").is_file());
    let models = json(&http_get(api, "/api/models").unwrap());
    assert_eq!(models["registry"], serde_json::json!(["univariate-ae/1.0.0"]), "{models}");
    stop(&mut plant);
}

#[test]
fn shadow_scores_every_window_and_never_alerts() {
    let broker = Mosquitto::start(broker_options()).unwrap();
    let registry = tempfile::tempdir().unwrap();
    let mut plant = start(&broker, "shadow", registry.path(), "deploy = \"shadow\"\nalert_rate_tolerance = 1.0");
    let api = api_addr(&plant.agent);

    // Deploy by dropping the version into the watched registry.
    drop_into_registry(registry.path(), &shipped("1.0.0"), "1.0.0", |_| {});
    plant.agent.wait_for_line(|l| l.contains("model deployed") && l.contains("1.0.0"), Duration::from_secs(30)).expect("shadow deployed");
    let view = json(&http_get(api, "/api/models").unwrap());
    assert_eq!((view["active"]["version"].as_str(), view["candidate"]["version"].as_str(), view["candidate"]["mode"].as_str()), (Some("1.1.0"), Some("1.0.0"), Some("shadow")), "{view}");

    let n = warmup_of("1.1.0") + 60;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    let plantseries = [("l1.temp", series(7, t0, n, 40.0, Some(n - 12))), ("l1.press", series(8, t0, n, 5.0, None)), ("l2.flow", series(9, t0, n, 12.0, None))];
    for (e, s) in &plantseries {
        publish_series(&broker, e, s);
    }
    let last: BTreeMap<String, i64> = plantseries.iter().map(|(e, s)| (e.to_string(), last_window_end(s.last().unwrap().0))).collect();
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(120), Some(&plant.agent), "the last scores", |r| {
        has_last_scores(r, &last) && {
            let sh = shadow_scores(r);
            last.iter().all(|(e, end)| sh.iter().any(|s| &s.1 == e && s.2 == *end))
        }
    });

    let sc = deciding_scores(&records);
    let sh = shadow_scores(&records);
    let decided: BTreeSet<(String, i64)> = sc.iter().map(|s| (s.1.clone(), s.2)).collect();
    let shadowed: BTreeSet<(String, i64)> = sh.iter().map(|s| (s.1.clone(), s.2)).collect();
    assert_eq!(decided.len(), sc.len(), "one score per window");
    assert_eq!(shadowed.len(), sh.len(), "one shadow score per window");
    assert_eq!(decided, shadowed, "both models score exactly the same windows");
    assert!(sc.iter().all(|s| s.3 == "1.1.0"), "the active model decides every window");
    assert!(sh.iter().all(|s| s.3 == "1.0.0" && s.5 == "shadow"));
    // The shadow reaches the alert band on the anomaly, yet every alert is the active model's.
    let shadow_alert_band = sh.iter().filter(|s| s.4 == "alert").count();
    assert!(shadow_alert_band > 0, "the shadow never reached the alert band: the test proves nothing");
    let alerts: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Alert { model, .. } => Some(model.version.clone()),
            _ => None,
        })
        .collect();
    assert!(alerts.iter().all(|v| v == "1.1.0"), "a shadow raised an alert: {alerts:?}");
    eprintln!("{} windows scored by both; shadow alert-band windows {shadow_alert_band}; alert records {}", sh.len(), alerts.len());

    // The comparison report on the API and as metrics, over exactly those windows.
    let view = json(&http_get(api, "/api/models").unwrap());
    let c = &view["comparison"];
    eprintln!("comparison: {c}");
    assert_eq!(c["windows"].as_u64(), Some(sh.len() as u64), "{view}");
    for k in ["agreement", "active_alert_rate", "candidate_alert_rate"] {
        let v = c[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    let agree = sc.iter().filter(|s| sh.iter().any(|x| x.1 == s.1 && x.2 == s.2 && x.4 == s.4)).count();
    assert!((c["agreement"].as_f64().unwrap() - agree as f64 / sh.len() as f64).abs() < 1e-9, "agreement {c}");
    let rate = |v: &[String]| v.iter().filter(|b| *b == "alert").count() as f64 / sh.len() as f64;
    let cand_rate = rate(&sh.iter().map(|s| s.4.clone()).collect::<Vec<_>>());
    assert!((c["candidate_alert_rate"].as_f64().unwrap() - cand_rate).abs() < 1e-9, "{c}");
    assert!(c["candidate_latency_us"].as_f64().unwrap() > 0.0 && c["active_latency_us"].as_f64().unwrap() > 0.0, "{c}");
    assert!(c["score_correlation"].as_f64().unwrap().abs() <= 1.0);
    let page = http_get(api, "/metrics").unwrap().text();
    let samples = parse_prometheus(&page);
    assert_eq!(prom_value(&samples, "vigil_model_comparison_windows", &[]), Some(sh.len() as f64));
    assert_eq!(prom_value(&samples, "vigil_model_info", &[("version", "1.0.0"), ("role", "shadow")]), Some(1.0));
    assert_eq!(prom_value(&samples, "vigil_model_info", &[("version", "1.1.0"), ("role", "active")]), Some(1.0));
    assert_eq!(prom_value(&samples, "vigil_model_events_total", &[("event", "deployed")]), Some(1.0));
    stop(&mut plant);
}

#[test]
fn canary_cohort_matches_the_fraction_and_survives_a_restart() {
    let broker = Mosquitto::start(broker_options()).unwrap();
    let registry = tempfile::tempdir().unwrap();
    let fraction = 0.25;
    let settings = format!("deploy = \"canary\"\ncanary_fraction = {fraction}\nalert_rate_tolerance = 1.0");
    let mut plant = start(&broker, "canary", registry.path(), &settings);
    api_addr(&plant.agent);
    drop_into_registry(registry.path(), &shipped("1.0.0"), "1.0.0", |_| {});
    plant.agent.wait_for_line(|l| l.contains("model deployed") && l.contains("1.0.0"), Duration::from_secs(30)).expect("canary deployed");

    let entities: Vec<String> = (0..48).map(|i| format!("line{}.sensor{}", i / 8, i % 8)).collect();
    // Past the active model's warm-up, so that every entity gets decided windows.
    let n = warmup_of("1.1.0") + 8;
    let extra = 8;
    let t0 = now_ms().div_euclid(1000) * 1000 - (n + extra) as i64 * STEP_MS - 60_000;
    let all: Vec<Vec<(i64, f64)>> = (0..entities.len()).map(|k| series(300 + k as u64, t0, n + extra, 10.0 + k as f64, None)).collect();
    for (e, s) in entities.iter().zip(&all) {
        publish_series(&broker, e, &s[..n]);
    }
    let last: BTreeMap<String, i64> = entities.iter().zip(&all).map(|(e, s)| (e.clone(), last_window_end(s[n - 1].0))).collect();
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(180), Some(&plant.agent), "the last scores", |r| has_last_scores(r, &last));

    let cohort = |records: &[Envelope], after_seq: u64| -> BTreeMap<String, BTreeSet<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in deciding_scores(records).into_iter().filter(|s| s.0 > after_seq) {
            m.entry(s.1).or_default().insert(s.3);
        }
        m
    };
    let before = cohort(&records, 0);
    let sha = sha_of("1.0.0");
    let mut on_canary = 0;
    for e in &entities {
        let versions = before.get(e).unwrap_or_else(|| panic!("{e} has no scores"));
        assert_eq!(versions.len(), 1, "{e} decided by {versions:?}");
        let canary = versions.contains("1.0.0");
        assert_eq!(canary, vigil::inference::lifecycle::canary_member(e, &sha, fraction), "{e}: cohort is the stable hash");
        on_canary += usize::from(canary);
    }
    let observed = on_canary as f64 / entities.len() as f64;
    eprintln!("canary cohort: {on_canary} of {} entities ({observed:.3}, configured {fraction})", entities.len());
    assert!((observed - fraction).abs() <= 0.125, "cohort fraction {observed} vs {fraction}");
    assert!(on_canary > 0 && on_canary < entities.len());
    // The active model's scores of canary windows are the shadow scores, never alerting.
    let sh = shadow_scores(&records);
    assert!(!sh.is_empty() && sh.iter().all(|s| s.3 == "1.1.0" && s.5 == "canary" && before[&s.1].contains("1.0.0")));

    // Restart: the same models, the same cohort.
    let seq_before = records.iter().map(|r| r.seq).max().unwrap();
    plant.agent.terminate().unwrap();
    assert!(plant.agent.wait_timeout(Duration::from_secs(30)).expect("stops").success());
    let from = broker.log_line_count();
    plant.agent = spawn_agent(&plant.config);
    plant.agent.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent connects");
    wait_for_subacks(&broker, from, "vigil-canary", 1);
    let api = api_addr(&plant.agent);
    let view = json(&http_get(api, "/api/models").unwrap());
    assert_eq!((view["active"]["version"].as_str(), view["candidate"]["version"].as_str(), view["candidate"]["mode"].as_str()), (Some("1.1.0"), Some("1.0.0"), Some("canary")), "{view}");
    for (e, s) in entities.iter().zip(&all) {
        publish_series(&broker, e, &s[n..]);
    }
    let last: BTreeMap<String, i64> = entities.iter().zip(&all).map(|(e, s)| (e.clone(), last_window_end(s.last().unwrap().0))).collect();
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(180), Some(&plant.agent), "the last scores after the restart", |r| has_last_scores(r, &last));
    let after = cohort(&records, seq_before);
    for e in &entities {
        assert_eq!(after.get(e), before.get(e), "{e}: decided by another model after the restart");
    }
    // The restart deployed nothing new.
    let events = model_events(&records);
    assert_eq!(events.iter().filter(|e| e.1 == "deployed").count(), 1, "{events:?}");
    stop(&mut plant);
}

#[test]
fn broken_candidates_are_refused_or_rolled_back_and_the_active_model_keeps_scoring() {
    let broker = Mosquitto::start(broker_options()).unwrap();
    let registry = tempfile::tempdir().unwrap();
    // 0.001 µs per window: no model meets this budget (see the module docs).
    let settings = "deploy = \"shadow\"\nrollback_min_windows = 20\nlatency_budget_us = 0.001\nalert_rate_tolerance = 1.0";
    let mut plant = start(&broker, "broken", registry.path(), settings);
    let api = api_addr(&plant.agent);

    // (a) Corrupted model file, uploaded: refused with the reason, nothing left in the registry.
    let resp = upload(api, "shadow", &upload_body(&shipped("1.0.0"), |m| {
        let i = m.len() / 2;
        m[i] ^= 0x55;
    }));
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert!(resp.text().contains("sha256 mismatch"), "{}", resp.text());
    assert!(!registry.path().join("univariate-ae/1.0.0").exists(), "a refused upload stays out of the registry");
    // Without the token: refused before anything happens.
    let no_token = http_request(api, "POST", "/api/models", &[], b"{}").unwrap();
    assert_eq!(no_token.status, 401);

    // (b) Wrong input shape (manifest and golden vectors say 16 values, the model takes 32),
    // dropped into the registry: refused.
    drop_into_registry(registry.path(), &shipped("1.0.0"), "1.0.1-narrow", |dir| {
        let mut m = manifest(dir);
        m["version"] = "1.0.1-narrow".into();
        m["input"]["window"] = 16.into();
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        let mut g: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap()).unwrap();
        for k in ["inputs", "outputs"] {
            for row in g[k].as_array_mut().unwrap() {
                row.as_array_mut().unwrap().truncate(16);
            }
        }
        let g = serde_json::json!({"inputs": g["inputs"], "outputs": g["outputs"], "tolerance": g["tolerance"]});
        std::fs::write(dir.join("golden.json"), serde_json::to_vec(&g).unwrap()).unwrap();
    });
    let refused = plant.agent.wait_for_line(|l| l.contains("model refused") && l.contains("1.0.1-narrow"), Duration::from_secs(30)).expect("narrow model refused");
    eprintln!("{refused}");

    // (c) A valid candidate over its latency budget: deployed as shadow, then demoted.
    let resp = upload(api, "shadow", &upload_body(&shipped("1.0.0"), |_| {}));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(json(&resp)["candidate"]["version"], "1.0.0");
    let n = warmup_of("1.1.0") + 20;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    let s1 = series(21, t0, n, 30.0, None);
    let s2 = series(22, t0, n, 3.0, None);
    publish_series(&broker, "l1.temp", &s1);
    publish_series(&broker, "l1.press", &s2);
    let last: BTreeMap<String, i64> = [("l1.temp", &s1), ("l1.press", &s2)].iter().map(|(e, s)| (e.to_string(), last_window_end(s.last().unwrap().0))).collect();
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(120), Some(&plant.agent), "the last scores and a demotion", |r| {
        has_last_scores(r, &last) && model_events(r).iter().any(|e| e.1 == "demoted")
    });

    let events = model_events(&records);
    for e in &events {
        eprintln!("model_event seq {}: {} {} ({}): {}", e.0, e.1, e.2, e.3, e.4);
    }
    let refusals: Vec<&String> = events.iter().filter(|e| e.1 == "refused").map(|e| &e.4).collect();
    assert_eq!(refusals.len(), 2, "{events:?}");
    assert!(refusals[0].contains("sha256 mismatch"), "{}", refusals[0]);
    assert!(refusals[1].contains("1.0.1-narrow") && refusals[1].contains("shape"), "{}", refusals[1]);
    let demoted = events.iter().find(|e| e.1 == "demoted").unwrap();
    assert_eq!((demoted.2.as_str(), demoted.3.as_str()), ("1.0.0", "shadow"));
    assert!(demoted.4.contains("latency_budget_us"), "{}", demoted.4);
    // The active model scored on: every score is 1.1.0's, the last windows included, and
    // nothing of the demoted candidate was committed after its demotion.
    let sc = deciding_scores(&records);
    assert!(sc.iter().all(|s| s.3 == "1.1.0"));
    assert!(shadow_scores(&records).iter().all(|s| s.0 < demoted.0));
    let view = json(&http_get(api, "/api/models").unwrap());
    assert_eq!(view["active"]["version"], "1.1.0", "{view}");
    assert!(view["candidate"].is_null(), "{view}");
    let samples = parse_prometheus(&http_get(api, "/metrics").unwrap().text());
    assert_eq!(prom_value(&samples, "vigil_model_events_total", &[("event", "refused")]), Some(2.0));
    assert_eq!(prom_value(&samples, "vigil_model_events_total", &[("event", "demoted")]), Some(1.0));
    assert!(prom_value(&samples, "vigil_health_alerts_total", &[("kind", "model_lifecycle")]).unwrap() >= 1.0);
    stop(&mut plant);
}
