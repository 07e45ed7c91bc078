//! The dashboard end to end in a real browser: headless Chromium (Debian `chromium`) driven by
//! `playwright-core` (`tests/dashboard/e2e.cjs`). The agent runs the demo config
//! (`config/demo.toml`: the simulated plant and its windows; the alert threshold lowered to
//! 0.45 for the injected spike) plus an MQTT
//! subscription on a real Mosquitto. The page is opened first; then a series with a spike is
//! published for `l1.temp`, and the open alert must appear on the already-open page (pushed by
//! server-sent events, no reload). The browser acknowledges it with the API token, the test
//! checks the acknowledgement through the JSON API; it then labels a review-queue item as an
//! anomaly and the `review_label` record must reach the outbox. The screenshot is kept as an artefact
//! in `target/test-artefacts/dashboard.png`. The page must make no request outside the agent
//! (it works offline).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;
use vigil_test_harness::{http_get, Mosquitto, MosquittoOptions};

/// `config/demo.toml` with its paths in `dir`, the API on a free port with the test token, and
/// a `plant/{line}/{sensor}/value` MQTT subscription.
fn demo_config(dir: &std::path::Path, port: u16) -> String {
    let text = std::fs::read_to_string(repo_root().join("config/demo.toml")).unwrap();
    let mut c: toml::Table = toml::from_str(&text).unwrap();
    c["agent"]["data_dir"] = toml::Value::String(dir.join("data").display().to_string());
    c["agent"]["id"] = "dash".into();
    c["inference"]["model_dir"] = toml::Value::String(model_dir().display().to_string());
    c["uplink"]["directory"]["path"] = toml::Value::String(dir.join("outbox").display().to_string());
    // The demo's alert threshold (0.65) is calibrated on the simulator's spikes; the injected
    // spike below scores 0.52-0.59 with univariate-ae 1.1.0 once it is inside the window.
    let alerts = c["alerts"].as_table_mut().unwrap();
    // Every scored l1.temp window below the alert band is a review-band window, so the review
    // queue has an item for the browser to label (at most one per entity per cooldown).
    alerts.insert("review_threshold".into(), 0.0001.into());
    alerts.insert("alert_threshold".into(), 0.45.into());
    let extra: toml::Table = toml::from_str(&format!(
        "{}\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{API_TOKEN}\"\n[[ingest.mqtt]]\ntopic = \"plant/{{line}}/{{sensor}}/value\"\nentity = \"{{line}}.{{sensor}}\"\n",
        mqtt_plain(port)
    ))
    .unwrap();
    for (k, v) in extra {
        match (c.get_mut(&k), v) {
            (Some(toml::Value::Table(t)), toml::Value::Table(add)) => t.extend(add),
            (_, v) => {
                c.insert(k, v);
            }
        }
    }
    toml::to_string(&c).unwrap()
}

#[test]
fn dashboard_shows_a_live_alert_and_acknowledges_it_in_chromium() {
    let node_modules = vigil_test_harness::peers_node_modules();
    assert!(node_modules.join("playwright-core").is_dir(), "{} missing: run tests/peers/install.sh", node_modules.display());

    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, demo_config(dir.path(), port)).unwrap();
    let from = broker.log_line_count();
    let mut agent = spawn_agent(&config);
    let api = api_addr(&agent);
    agent.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent connects");
    wait_for_subacks(&broker, from, "vigil-dash", 1);

    let artefacts = repo_root().join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let screenshot = artefacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut browser = Command::new("node")
        .arg(repo_root().join("tests/dashboard/e2e.cjs"))
        .args([format!("http://{api}/"), API_TOKEN.to_string(), "l1.temp".into(), screenshot.display().to_string()])
        .env("NODE_PATH", &node_modules)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let (tx, rx) = mpsc::channel();
    let stdout = browser.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("browser: {line}");
            let _ = tx.send(line);
        }
    });
    let mut expect = |prefix: &str, timeout: Duration| -> String {
        loop {
            match rx.recv_timeout(timeout) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(e) => {
                    let _ = browser.kill();
                    eprintln!("entities: {}", http_get(api, "/api/entities?filter=l1.").map(|r| r.text()).unwrap_or_default());
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(browser.stderr.as_mut().unwrap(), &mut err);
                    panic!("browser did not report {prefix} ({e}):\n{err}\n--- agent ---\n{}", agent.lines().join("\n"));
                }
            }
        }
    };

    // The page is open and its event stream live before the anomaly exists.
    expect("LIVE", Duration::from_secs(60));
    let open: serde_json::Value = serde_json::from_slice(&http_get(api, "/api/alerts").unwrap().body).unwrap();
    assert!(!open["open"].as_array().unwrap().iter().any(|a| a["entity"] == "l1.temp"), "{open}");

    // Like the simulator's spikes: 1 Hz samples, two of them 50σ off, near the end (so the
    // alert is still open when the input stops).
    let n = model_warmup() + 60;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * 1000 - 60_000;
    let mut rng = Rng::new(21);
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let spike = if i == n - 24 || i == n - 23 { 5.0 } else { 0.0 };
            let v = 55.0 + 0.15 * rng.unit() + spike;
            json_reading(t0 + i as i64 * 1000, (v * 1e4).round() / 1e4)
        })
        .collect();
    publish_lines(port, "plant/l1/temp/value", &lines, &[]);

    // Each step waits longer than the browser's own bound (e2e.cjs TIMEOUT, 90 s), so a stuck
    // step ends with the browser's report of what it was waiting for, not with a bare timeout.
    expect("ALERT", Duration::from_secs(120));
    expect("ACKED", Duration::from_secs(120));
    // The browser labels the first item of the review queue: whichever window reached review
    // first (the test's sensor or one of the simulator's); the page reports the agent's answer,
    // "labelled <entity> anomaly".
    let labelled = expect("LABELLED", Duration::from_secs(120));
    let labelled_entity = labelled.split_whitespace().nth(2).unwrap_or_else(|| panic!("no entity in {labelled:?}")).to_string();
    expect("DONE", Duration::from_secs(120));
    let status = browser.wait().unwrap();
    assert!(status.success(), "browser exit {status}");

    let alerts: serde_json::Value = serde_json::from_slice(&http_get(api, "/api/alerts").unwrap().body).unwrap();
    let a = alerts["open"].as_array().unwrap().iter().find(|a| a["entity"] == "l1.temp").unwrap_or_else(|| panic!("{alerts}"));
    assert_eq!(a["acked_by"], "e2e-test", "{a}");
    // The browser's label is stored and uplinked like one made through the API.
    wait_for_outbox(&dir.path().join("outbox"), Duration::from_secs(30), Some(&agent), "the browser's review label", |r| {
        r.iter().any(|e| matches!(&e.body, cloud_uplink::Body::ReviewLabel { entity, label, by, .. } if *entity == labelled_entity && label == "anomaly" && by == "e2e-test"))
    });
    let png = std::fs::read(&screenshot).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot is a PNG of a rendered page ({} bytes)", png.len());
    eprintln!("screenshot: {} ({} bytes)", screenshot.display(), png.len());

    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    assert_no_panic(&agent);
}
