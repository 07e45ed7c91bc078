//! Modbus ingest against real peers: the pymodbus 3.16.1 simulator on Modbus TCP and, over a
//! socat pseudo-terminal pair, on Modbus RTU; `mbpoll` as the independent Modbus client.
//!
//! - `tcp_register_map_alert_and_write_back`: a typed register map (f32 in both word orders,
//!   u16, i16, u32, an incrementing counter, a packed bit) read exactly; an anomaly written into
//!   a register with mbpoll raises an alert end to end, whose write-back rule sets a coil that
//!   mbpoll reads back; the write is in the audit log.
//! - `rtu_two_units_on_one_bus_and_a_missing_unit`: two unit ids on one serial bus read
//!   correctly while a third unit id that does not exist is `down`.
//! - `faults_do_not_stop_healthy_devices_and_the_agent_recovers`: an illegal address
//!   (exception → DLQ record), a unit id that does not exist, a "device" whose replies do not fit
//!   its requests (a socat echo server: malformed replies → DLQ records), and the simulator
//!   stopped and restarted mid-run.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cloud_uplink::{Body, Envelope, Quality};
use support::*;
use vigil_test_harness::{mbpoll_read, mbpoll_write_registers, EchoServer, MbLink, MbTable, ModbusSim, PtyPair};

/// A simulator device in the JSON format of `pymodbus.simulator` (registers 0-99 defined).
fn device(uint16: &[(u16, u16)], counter: Option<u16>, bits: &[u16]) -> serde_json::Value {
    let mut regs: BTreeMap<u16, serde_json::Value> = (0..100).map(|a| (a, serde_json::json!({"addr": a, "value": 0}))).collect();
    for &(a, v) in uint16 {
        regs.insert(a, serde_json::json!({"addr": a, "value": v}));
    }
    if let Some(a) = counter {
        regs.insert(a, serde_json::json!({"addr": a, "value": 0, "action": "increment"}));
    }
    for b in bits {
        regs.remove(b);
    }
    serde_json::json!({
        "setup": {"co size": 100, "di size": 100, "hr size": 100, "ir size": 100, "shared blocks": true, "type exception": false,
                  "defaults": {"value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
                               "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}}},
        "invalid": [],
        "write": [[0, 99]],
        "bits": bits.iter().map(|b| [b, b]).collect::<Vec<_>>(),
        "uint16": regs.into_values().collect::<Vec<_>>(),
        "uint32": [], "float32": [], "float64": [], "string": [], "repeat": []
    })
}

fn units(devices: &[(u8, serde_json::Value)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = devices.iter().map(|(u, d)| (u.to_string(), d.clone())).collect();
    serde_json::json!({ "units": map }).to_string()
}

/// 21.5f32 = 0x41AC_0000; 617001 = 0x0009_6A29; -2i16 = 0xFFFE.
const PLC_REGISTERS: [(u16, u16); 9] = [(0, 0x41AC), (1, 0), (2, 0), (3, 0x41AC), (4, 1234), (5, 0xFFFE), (6, 0x0009), (7, 0x6A29), (9, 500)];
const COUNTER: u16 = 8;
/// Register 40 holds packed bits; coil 645 is its bit 5 (the simulator's shared blocks map coil
/// 16·r + b to bit b of register r).
const STATUS_REGISTER: u16 = 40;
const STACK_LIGHT_COIL: u16 = 16 * STATUS_REGISTER + 5;

const PLC_POINTS: &str = r#"
[[ingest.modbus.devices.points]]
entity = "plc.f32_abcd"
table = "holding"
address = 0
type = "f32"
unit = "degC"

[[ingest.modbus.devices.points]]
entity = "plc.f32_cdab"
table = "holding"
address = 2
type = "f32"
word_order = "little"

[[ingest.modbus.devices.points]]
entity = "plc.u16"
table = "holding"
address = 4
type = "u16"

[[ingest.modbus.devices.points]]
entity = "plc.i16"
table = "holding"
address = 5
type = "i16"

[[ingest.modbus.devices.points]]
entity = "plc.u32"
table = "holding"
address = 6
type = "u32"

[[ingest.modbus.devices.points]]
entity = "plc.counter"
table = "holding"
address = 8
type = "u16"

[[ingest.modbus.devices.points]]
entity = "plc.temp"
table = "holding"
address = 9
type = "u16"
scale = 0.1

[[ingest.modbus.devices.points]]
entity = "plc.stack_light"
table = "holding"
address = 40
type = "bit"
bit = 5
"#;

/// An agent config for Modbus tests: `base_config` with short windows (3.2 s of 32 slots, hop
/// 400 ms) so 50 ms polls are scored within seconds.
fn config(dir: &Path, id: &str, modbus: &str) -> std::path::PathBuf {
    let (data, outbox) = (dir.join("data"), dir.join("outbox"));
    let base = base_config(id, &data, &outbox)
        .replace(&format!("size_ms = {SIZE_MS}"), "size_ms = 3200")
        .replace(&format!("hop_ms = {HOP_MS}"), "hop_ms = 400");
    let path = dir.join("vigil.toml");
    std::fs::write(&path, format!("{base}\n{modbus}")).unwrap();
    path
}

fn modbus_readings(records: &[Envelope]) -> Vec<(String, i64, f64, Quality)> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Reading { entity, value, quality, source, .. } => {
                assert_eq!(source, "modbus");
                Some((entity.clone(), r.event_time_ms, *value, *quality))
            }
            _ => None,
        })
        .collect()
}

fn values_of(records: &[Envelope], entity: &str) -> Vec<(i64, f64)> {
    let mut v: Vec<(i64, f64)> = modbus_readings(records).into_iter().filter(|r| r.0 == entity).map(|r| (r.1, r.2)).collect();
    v.sort_by_key(|r| r.0);
    v
}

fn dlq_records(records: &[Envelope]) -> Vec<(String, String)> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Dlq { topic, reason, .. } => Some((topic.clone().unwrap_or_default(), reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn tcp_register_map_alert_and_write_back() {
    let sim = ModbusSim::start_tcp(&units(&[(1, device(&PLC_REGISTERS, Some(COUNTER), &[STATUS_REGISTER]))])).unwrap();
    let port = sim.port();
    let dir = tempfile::tempdir().unwrap();
    let modbus = format!(
        r#"
[[ingest.modbus.devices]]
name = "plc"
tcp = "127.0.0.1:{port}"
unit_id = 1
poll_interval_ms = 50
timeout_ms = 1000
{PLC_POINTS}
[[ingest.modbus.write_back]]
entity = "plc.temp"
device = "plc"
table = "coil"
address = {STACK_LIGHT_COIL}
value = 1
min_interval_s = 3600
"#
    );
    let cfg = config(dir.path(), "modbus-tcp", &modbus);
    // plc.temp is a constant register: its windows score ~0.001, and the spike below scored
    // 0.17-0.36 in runs on a loaded 2-core machine (the model saturates at the z-score clip, and
    // which polls land in which of the 32 slots varies with load) - below the shared 0.4 alert
    // threshold in some runs. Thresholds that sit between the two keep the test about Modbus.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace("review_threshold = 0.3\n", "review_threshold = 0.05\n").replace("alert_threshold = 0.4\n", "alert_threshold = 0.1\n");
    assert!(text.contains("alert_threshold = 0.1\n"), "the shared config's thresholds moved: {text}");
    std::fs::write(&cfg, text).unwrap();
    let outbox = dir.path().join("outbox");

    // The plan: registers 0-9 in one request (coalesced), register 40 in another (a gap of 30
    // unmapped registers is more than max_gap).
    let out = vigil(&["check-config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("modbus: plc (tcp 127.0.0.1:") && text.contains("8 points in 2 read requests per poll"), "{text}");

    let mut agent = spawn_agent(&cfg);
    agent.wait_for_line(|l| l.contains("modbus device up"), Duration::from_secs(30)).expect("device up");

    // --- the register map is read exactly ---------------------------------------------------
    let records = wait_for_outbox(&outbox, Duration::from_secs(30), Some(&agent), "20 polls", |r| values_of(r, "plc.counter").len() >= 20);
    let expect: [(&str, f64); 7] = [
        ("plc.f32_abcd", 21.5),
        ("plc.f32_cdab", 21.5),
        ("plc.u16", 1234.0),
        ("plc.i16", -2.0),
        ("plc.u32", 617001.0),
        ("plc.temp", 50.0),
        ("plc.stack_light", 0.0),
    ];
    for (entity, want) in expect {
        let got = values_of(&records, entity);
        assert!(!got.is_empty(), "no readings for {entity}");
        assert!(got.iter().all(|(_, v)| *v == want), "{entity}: expected {want}, got {got:?}");
    }
    // The counter increments on every read: consecutive polls read consecutive values, one
    // reading per poll, at increasing poll times.
    let counter = values_of(&records, "plc.counter");
    for w in counter.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1.0, "counter readings {counter:?}");
        assert!(w[1].0 > w[0].0, "poll times must increase: {counter:?}");
    }
    let now = now_ms();
    for (e, t, _, q) in modbus_readings(&records) {
        assert!(t <= now && t > now - 60_000, "{e}: event time {t} is not a poll time");
        assert_eq!(q, Quality::Good, "{e}");
    }

    // --- an anomaly in a simulated value raises an alert end to end --------------------------
    // Wait until plc.temp is scored (the model's warm-up is behind it), then step it up.
    wait_for_outbox(&outbox, Duration::from_secs(90), Some(&agent), "scores for plc.temp", |r| {
        scores(r).iter().filter(|s| s.0 == "plc.temp").count() >= 3
    });
    assert_eq!(mbpoll_read(MbLink::Tcp(port), 1, MbTable::Coil, STACK_LIGHT_COIL, 1).unwrap(), vec![0], "stack light off before the alert");
    // A spike: 90.0 until the agent has read it in four polls, then back to 50.0. Counting the
    // polls (rather than reverting on the first one read) keeps the anomaly the same size however
    // loaded the machine is: a one-poll blip in a 32-reading window scored only ~0.33 (review).
    let anomaly_ms = now_ms();
    mbpoll_write_registers(port, 1, 9, &[900]).unwrap();
    wait_for_outbox(&outbox, Duration::from_secs(20), Some(&agent), "the spike read in four polls", |r| {
        values_of(r, "plc.temp").iter().filter(|(_, v)| *v == 90.0).count() >= 4
    });
    mbpoll_write_registers(port, 1, 9, &[500]).unwrap();
    let r = wait_for_outbox(&outbox, Duration::from_secs(20), Some(&agent), "scores after the spike", |r| scores(r).iter().any(|s| s.0 == "plc.temp" && s.1 > anomaly_ms + 4000));
    let sc: Vec<String> = scores(&r).iter().filter(|s| s.0 == "plc.temp" && s.1 > anomaly_ms - 2000).map(|s| format!("{:.3}", s.2)).collect();
    eprintln!("plc.temp scores around the spike: {}", sc.join(" "));
    agent
        .wait_for_line(|l| l.starts_with("ALERT RAISED") && l.contains("plc.temp"), Duration::from_secs(60))
        .expect("an alert for plc.temp");

    // --- write-back: the alert set the stack light coil ---------------------------------------
    agent
        .wait_for_line(|l| l.contains("modbus write-back") && l.contains("outcome=written") && l.contains(&format!("address={STACK_LIGHT_COIL}")), Duration::from_secs(20))
        .expect("write-back audit log line");
    assert_eq!(mbpoll_read(MbLink::Tcp(port), 1, MbTable::Coil, STACK_LIGHT_COIL, 1).unwrap(), vec![1], "stack light on after the alert");
    // The agent's own map sees the bit too (packed-bit point on register 40).
    let records = wait_for_outbox(&outbox, Duration::from_secs(20), Some(&agent), "the stack light bit read back", |r| {
        values_of(r, "plc.stack_light").iter().any(|(_, v)| *v == 1.0)
    });
    let temp = values_of(&records, "plc.temp");
    assert!(temp.iter().any(|(t, v)| *v == 90.0 && *t >= anomaly_ms - 100), "anomalous value read: {temp:?}");
    let alerts: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Alert { entity, .. } => Some(entity.clone()),
            _ => None,
        })
        .collect();
    assert!(alerts.iter().any(|e| e == "plc.temp"), "alert record for plc.temp: {alerts:?}");

    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).unwrap().success());
    assert_no_panic(&agent);

    // --- the write is in the persisted audit log -----------------------------------------------
    let out = vigil(&["audit", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let written: Vec<&str> = text.lines().filter(|l| l.contains("written")).collect();
    assert_eq!(written.len(), 1, "exactly one write (rate limit 1/h): {text}");
    assert!(written[0].contains(&format!("plc coil {STACK_LIGHT_COIL} := 1")) && written[0].contains("alert on plc.temp"), "{text}");
}

#[test]
fn rtu_two_units_on_one_bus_and_a_missing_unit() {
    let pty = PtyPair::start().unwrap();
    let _sim = ModbusSim::start_rtu(&units(&[(1, device(&[(0, 111), (1, 0xFF9C)], None, &[])), (2, device(&[(0, 222), (1, 7)], None, &[]))]), &pty.b()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = q(pty.a());
    let dev = |name: &str, unit: u8| {
        format!(
            r#"
[[ingest.modbus.devices]]
name = "{name}"
serial_port = {port}
baud_rate = 19200
parity = "none"
stop_bits = 1
unit_id = {unit}
poll_interval_ms = 100
# Generous: a loaded CI machine must not make a healthy unit look dead.
timeout_ms = 500
retries = 1
backoff_min_ms = 500
backoff_max_ms = 2000

[[ingest.modbus.devices.points]]
entity = "{name}.a"
table = "holding"
address = 0
type = "u16"

[[ingest.modbus.devices.points]]
entity = "{name}.b"
table = "holding"
address = 1
type = "i16"
"#
        )
    };
    let cfg = config(dir.path(), "modbus-rtu", &format!("{}{}{}", dev("u1", 1), dev("u2", 2), dev("ghost", 9)));
    let outbox = dir.path().join("outbox");
    let mut agent = spawn_agent(&cfg);
    agent.wait_for_line(|l| l.contains("modbus device down") && l.contains("ghost"), Duration::from_secs(30)).expect("unit 9 is down");
    let started = Instant::now();
    let records = wait_for_outbox(&outbox, Duration::from_secs(60), Some(&agent), "readings of both units", |r| {
        values_of(r, "u1.a").len() >= 20 && values_of(r, "u2.a").len() >= 20
    });
    let expect = [("u1.a", 111.0), ("u1.b", -100.0), ("u2.a", 222.0), ("u2.b", 7.0)];
    for (e, want) in expect {
        let got = values_of(&records, e);
        assert!(got.iter().all(|(_, v)| *v == want), "{e}: expected {want}, got {got:?}");
    }
    assert!(values_of(&records, "ghost.a").is_empty());
    eprintln!("40 polls of two units next to a dead one in {:?}", started.elapsed());
    assert!(agent.lines().iter().all(|l| !(l.contains("modbus device down") && (l.contains("u1") || l.contains("u2")))), "healthy units never went down");
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).unwrap().success());
    assert_no_panic(&agent);
}

#[test]
fn faults_do_not_stop_healthy_devices_and_the_agent_recovers() {
    let mut sim = ModbusSim::start_tcp(&units(&[(1, device(&[(0, 42)], Some(COUNTER), &[]))])).unwrap();
    let echo = EchoServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dev = |name: &str, port: u16, unit: u8, address: u16| {
        format!(
            r#"
[[ingest.modbus.devices]]
name = "{name}"
tcp = "127.0.0.1:{port}"
unit_id = {unit}
poll_interval_ms = 100
# Generous: a loaded CI machine must not make the healthy device look degraded.
timeout_ms = 1000
retries = 1
backoff_min_ms = 200
backoff_max_ms = 800

[[ingest.modbus.devices.points]]
entity = "{name}.value"
table = "holding"
address = {address}
type = "u16"

[[ingest.modbus.devices.points]]
entity = "{name}.counter"
table = "holding"
address = {COUNTER}
type = "u16"
"#
        )
    };
    // "badaddr" asks for register 150 of a 100-register device (separate request: max_gap).
    let port = sim.port();
    let devices = [dev("good", port, 1, 0), dev("ghost", port, 7, 0), dev("badaddr", port, 1, 150), dev("echo", echo.port(), 1, 0)];
    let cfg = config(dir.path(), "modbus-faults", &devices.concat());
    let outbox = dir.path().join("outbox");
    let mut agent = spawn_agent(&cfg);
    agent.wait_for_line(|l| l.contains("modbus device down") && l.contains("ghost"), Duration::from_secs(30)).expect("ghost down");
    agent.wait_for_line(|l| l.contains("modbus device degraded") && l.contains("badaddr"), Duration::from_secs(30)).expect("badaddr degraded");
    let records = wait_for_outbox(&outbox, Duration::from_secs(30), Some(&agent), "readings and the exception's DLQ record", |r| {
        values_of(r, "good.value").len() >= 10
            && dlq_records(r).iter().any(|(t, _)| t.contains("badaddr"))
            && dlq_records(r).iter().any(|(t, _)| t.contains("echo"))
    });
    assert!(values_of(&records, "good.value").iter().all(|(_, v)| *v == 42.0));
    // badaddr's valid point is still read; its illegal one is a DLQ record with the reason.
    assert!(!values_of(&records, "badaddr.counter").is_empty());
    assert!(values_of(&records, "badaddr.value").is_empty());
    let dlq = dlq_records(&records);
    let (topic, reason) = dlq.iter().find(|(t, _)| t.contains("badaddr")).unwrap();
    assert_eq!(topic, "modbus:badaddr/1:holding 150+1", "{dlq:?}");
    assert!(reason.starts_with("modbus_exception: exception"), "{reason}");
    // The echo "device" answers every request with the request itself: malformed replies.
    let echoed: Vec<&(String, String)> = dlq.iter().filter(|(t, _)| t.contains("echo")).collect();
    assert!(echoed.iter().all(|(_, r)| r.starts_with("malformed_reply: ")), "{echoed:?}");
    assert!(values_of(&records, "echo.value").is_empty() && values_of(&records, "echo.counter").is_empty());
    assert!(dlq.iter().all(|(t, _)| t.contains("badaddr") || t.contains("echo")), "only the illegal address and the echo are dead-lettered: {dlq:?}");

    // Device states and the exception are visible in the metrics too.
    let page = vigil_test_harness::http_get(api_addr(&agent), "/metrics").unwrap();
    let samples = parse_prometheus(&String::from_utf8_lossy(&page.body));
    for (device, state) in [("good", "up"), ("ghost", "down"), ("badaddr", "degraded"), ("echo", "degraded")] {
        assert_eq!(prom_value(&samples, "vigil_modbus_device_state", &[("device", device), ("state", state)]), Some(1.0), "{device} {state}");
    }
    assert!(prom_value(&samples, "vigil_modbus_exceptions_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(prom_value(&samples, "vigil_modbus_timeouts_total", &[]).unwrap_or(0.0) >= 1.0, "ghost's requests time out");
    assert!(prom_value(&samples, "vigil_dlq_records_total", &[("reason", "modbus_exception")]).unwrap_or(0.0) >= 1.0);
    assert!(prom_value(&samples, "vigil_modbus_malformed_total", &[]).unwrap_or(0.0) >= 1.0);

    // --- the simulator goes away and comes back ------------------------------------------------
    // Count lines first: the agent may log "down" before stop() returns.
    let from = agent.line_count();
    sim.stop().unwrap();
    agent.wait_for_line_after(from, |l| l.contains("modbus device down") && l.contains("good"), Duration::from_secs(30)).expect("good down");
    sim.start_again().unwrap();
    let restarted_ms = now_ms();
    agent.wait_for_line_after(from, |l| l.contains("modbus device up") && l.contains("good"), Duration::from_secs(30)).expect("good recovers by itself");
    let records = wait_for_outbox(&outbox, Duration::from_secs(30), Some(&agent), "readings after the restart", |r| {
        values_of(r, "good.value").iter().filter(|(t, _)| *t >= restarted_ms).count() >= 5
            && values_of(r, "badaddr.counter").iter().any(|(t, _)| *t >= restarted_ms)
    });
    assert!(values_of(&records, "good.value").iter().all(|(_, v)| *v == 42.0));
    assert!(values_of(&records, "ghost.value").is_empty());
    agent.terminate().unwrap();
    assert!(agent.wait_timeout(Duration::from_secs(30)).unwrap().success());
    assert_no_panic(&agent);
}
