//! Webhook alert sinks against a local HTTP server started by this test that records every
//! request (a stand-in for Slack and PagerDuty, which cannot be reached from here; the bodies
//! follow their documented formats and are checked as such):
//!
//! - routing: alerts of `l1.*` go to a Slack-style webhook (raised, cleared) and a
//!   PagerDuty-style one (trigger, resolve with one dedup key); the alert of `l2.press` goes
//!   nowhere;
//! - retries: the Slack endpoint answers 503 to its first two requests; the same alert is
//!   retried and delivered once, and `vigil_sink_errors_total` counts the failures;
//! - persisted retries: the PagerDuty endpoint refuses everything while the agent runs for the
//!   first time; after a restart (endpoint healthy) the trigger and the resolve are delivered,
//!   in order, from the outbox;
//! - the routing key comes from `VIGIL_WEBHOOK_PD_ROUTING_KEY`; neither it nor the webhook URL's
//!   secret path appears in the log; a route sending review events to an operational webhook is
//!   a config error.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use support::*;
use vigil_test_harness::{http_get, AgentProcess, Mosquitto, MosquittoOptions};

/// One request the recording server received, and what it answered.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    body: serde_json::Value,
    status: u16,
}

/// An HTTP/1.1 server on 127.0.0.1 that records every POST and answers 503 while the path's
/// failure budget lasts (`/v2/enqueue`: PagerDuty, anything else: Slack), 202 afterwards.
struct RecordingServer {
    port: u16,
    seen: Arc<(Mutex<Vec<Recorded>>, Condvar)>,
    fail_pd: Arc<AtomicU64>,
}

impl RecordingServer {
    fn start(fail_slack: u64, fail_pd: u64) -> RecordingServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<(Mutex<Vec<Recorded>>, Condvar)> = Arc::default();
        let (fs, fp) = (Arc::new(AtomicU64::new(fail_slack)), Arc::new(AtomicU64::new(fail_pd)));
        let (seen2, fs2, fp2) = (seen.clone(), fs.clone(), fp.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let budget = if path.contains("enqueue") { &fp2 } else { &fs2 };
                let fail = budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1)).is_ok();
                let status = if fail { 503 } else { 202 };
                let reason = if fail { "Service Unavailable" } else { "Accepted" };
                let _ = write!(conn, "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
                let body = serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
                let (lock, cv) = &*seen2;
                lock.lock().unwrap().push(Recorded { path, body, status });
                cv.notify_all();
            }
        });
        RecordingServer { port, seen, fail_pd: fp }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.0.lock().unwrap().clone()
    }

    /// Blocks until `done(requests)` holds (woken by every request), or panics after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.seen;
        let mut seen = lock.lock().unwrap();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}; received {:#?}", *seen);
            seen = cv.wait_timeout(seen, left).unwrap().0;
        }
        seen.clone()
    }
}

const SLACK_SECRET: &str = "T0VIGIL/B0TEST/s3cretPath";

fn config(dir: &std::path::Path, broker: u16, server: u16, extra_route: &str) -> String {
    format!(
        r#"{base}
{mqtt}
[[ingest.mqtt]]
topic = "plant/{{line}}/{{sensor}}/value"
entity = "{{line}}.{{sensor}}"

[[alerts.webhook]]
name = "slack"
url = "http://127.0.0.1:{server}/services/{SLACK_SECRET}"
template = "slack"
max_per_minute = 600

[[alerts.webhook]]
name = "pd"
url = "http://127.0.0.1:{server}/v2/enqueue"
template = "pagerduty"
kind = "operational"
timeout_ms = 2000
max_per_minute = 600

[[alerts.route]]
to = ["slack"]
kinds = ["raised", "cleared"]
entities = ["l1.*"]

[[alerts.route]]
to = ["pd"]
entities = ["l1.*"]
{extra_route}"#,
        base = base_config("hooks", &dir.join("data"), &dir.join("outbox")),
        mqtt = mqtt_plain(broker),
    )
}

fn start_agent(config: &std::path::Path) -> AgentProcess {
    AgentProcess::spawn(
        vigil_bin(),
        ["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        [("NO_COLOR", "1"), ("VIGIL_WEBHOOK_PD_ROUTING_KEY", "rk-7731")],
    )
    .expect("spawn vigil")
}

fn successes<'a>(reqs: &'a [Recorded], path: &str) -> Vec<&'a Recorded> {
    reqs.iter().filter(|r| r.path.contains(path) && r.status == 202).collect()
}

#[test]
fn routed_retried_and_persisted_webhook_deliveries() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let port = broker.plain_port();
    // Slack: two failures, then healthy. PagerDuty: down for the whole first run.
    let server = RecordingServer::start(2, u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("vigil.toml");
    std::fs::write(&config_path, config(dir.path(), port, server.port, "")).unwrap();

    // A route sending review-band events to the operational webhook is refused.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, config(dir.path(), port, server.port, "\n[[alerts.route]]\nto = [\"pd\"]\nkinds = [\"review\"]\n")).unwrap();
    let out = vigil(&["check-config", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("alerts.route[2].kinds") && err.contains("review-band events only notify"), "{err}");

    let from = broker.log_line_count();
    let mut agent = start_agent(&config_path);
    agent.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent connects");
    wait_for_subacks(&broker, from, "vigil-hooks", 1);

    // l1.temp: a spike, then enough normal readings for the alert to clear. l2.press: a spike
    // that no route sends anywhere.
    let warm = model_warmup();
    let n = warm + 40;
    let t0 = now_ms().div_euclid(1000) * 1000 - n as i64 * STEP_MS - 60_000;
    for (topic, seed, base) in [("plant/l1/temp/value", 31, 70.0), ("plant/l2/press/value", 32, 5.0)] {
        let s = series(seed, t0, n, base, Some(warm + 10));
        publish_lines(port, topic, &s.iter().map(|&(t, v)| json_reading(t, v)).collect::<Vec<_>>(), &[]);
    }
    let outbox = dir.path().join("outbox");
    wait_for_outbox(&outbox, Duration::from_secs(120), Some(&agent), "both entities' alerts raised and cleared", |r| {
        let cleared: Vec<&str> = r
            .iter()
            .filter_map(|e| match &e.body {
                cloud_uplink::Body::Alert { entity, state: cloud_uplink::AlertState::Cleared, .. } => Some(entity.as_str()),
                _ => None,
            })
            .collect();
        cleared.contains(&"l1.temp") && cleared.contains(&"l2.press")
    });

    // Slack: raised and cleared for l1.temp, after two refused attempts of the first.
    let reqs = server.wait_for("Slack raised + cleared", Duration::from_secs(30), |r| successes(r, "services").len() >= 2);
    let slack: Vec<&Recorded> = reqs.iter().filter(|r| r.path.contains("services")).collect();
    assert_eq!(slack.iter().map(|r| r.status).collect::<Vec<_>>()[..3], [503, 503, 202], "{slack:#?}");
    assert_eq!(slack[0].body, slack[2].body, "the refused alert is the one retried");
    let texts: Vec<&str> = successes(&reqs, "services").iter().map(|r| r.body["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 2, "each alert delivered once: {texts:?}");
    assert!(texts[0].starts_with("[raised] l1.temp: anomaly on l1.temp"), "{texts:?}");
    assert!(texts[1].starts_with("[cleared] l1.temp:"), "{texts:?}");
    // PagerDuty is down: attempts, no success; the alerts wait in the outbox.
    let reqs = server.wait_for("a refused PagerDuty attempt", Duration::from_secs(30), |r| r.iter().any(|x| x.path.contains("enqueue")));
    assert!(successes(&reqs, "enqueue").is_empty());

    let api = api_addr(&agent);
    let page = http_get(api, "/metrics").unwrap().text();
    let samples = parse_prometheus(&page);
    assert_eq!(prom_value(&samples, "vigil_sink_errors_total", &[("sink", "webhook:slack")]), Some(2.0), "{page}");
    assert!(prom_value(&samples, "vigil_sink_errors_total", &[("sink", "webhook:pd")]).unwrap() >= 1.0);
    assert!(prom_value(&samples, "vigil_sink_oldest_undelivered_age_seconds", &[("sink", "webhook:pd")]).unwrap() > 0.0);

    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    let first_run = agent.lines();

    // --- second run: PagerDuty healthy; the persisted alerts are delivered ------------------
    server.fail_pd.store(0, Ordering::SeqCst);
    let slack_before = successes(&server.requests(), "services").len();
    let mut agent = start_agent(&config_path);
    let reqs = server.wait_for("PagerDuty trigger + resolve after the restart", Duration::from_secs(60), |r| successes(r, "enqueue").len() >= 2);
    let pd: Vec<&serde_json::Value> = successes(&reqs, "enqueue").iter().map(|r| &r.body).collect();
    assert_eq!(pd.len(), 2, "{pd:#?}");
    assert_eq!((pd[0]["event_action"].as_str(), pd[1]["event_action"].as_str()), (Some("trigger"), Some("resolve")), "{pd:#?}");
    for e in &pd {
        assert_eq!(e["routing_key"], "rk-7731");
        assert_eq!(e["dedup_key"], "vigil/hooks/l1.temp", "one incident per entity: {e}");
        assert_eq!(e["payload"]["source"], "hooks");
        assert_eq!(e["payload"]["component"], "l1.temp");
        assert_eq!(e["payload"]["severity"], "critical");
        assert!(e["payload"]["custom_details"]["score"].is_number(), "{e}");
    }
    assert_eq!(successes(&server.requests(), "services").len(), slack_before, "Slack got nothing twice after the restart");
    assert!(!reqs.iter().any(|r| r.body.to_string().contains("l2.press")), "l2.press is not routed anywhere");

    let api = api_addr(&agent);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = parse_prometheus(&http_get(api, "/metrics").unwrap().text());
        if prom_value(&samples, "vigil_sink_oldest_undelivered_age_seconds", &[("sink", "webhook:pd")]) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the pd sink did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).expect("agent stops").success());
    for l in first_run.iter().chain(agent.lines().iter()) {
        assert!(!l.contains("s3cretPath") && !l.contains("rk-7731"), "secret in the log: {l}");
    }
    assert_no_panic(&agent);
}
