//! Modbus polling throughput with request coalescing on vs off, in one run.
//!
//! ```text
//! cargo bench -p vigil-agent --bench modbus_poll [-- --seconds 5 --registers 240]
//! ```
//!
//! Starts one pymodbus 3.16.1 simulator on Modbus TCP (the test harness, peers from
//! `tests/peers/install.sh`) serving `--registers` holding registers, and polls a register map
//! over all of them — half `u16` points, half `u32` points (two registers each) — back to back
//! for `--seconds` per mode, through the agent's own poller (`ingest::modbus::poll`), with
//! `coalesce = true` and then `coalesce = false`. Prints points per second and requests per poll
//! cycle for both. Readings are decoded but not committed (this measures polling, not the
//! commit log).
//!
//! Without `--bench` on its command line (`cargo test --all-targets`, nextest listing) it does
//! nothing: it is a benchmark, not a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil::config::modbus::ModbusConfig;
use vigil::ingest::modbus::poll::{self, PollStats, Sinks};
use vigil::metrics::Metrics;
use vigil_test_harness::ModbusSim;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One simulator unit with `registers` holding registers holding their own address.
fn simulator_units(registers: u16) -> String {
    let regs: Vec<String> = (0..registers).map(|a| format!(r#"{{"addr": {a}, "value": {a}}}"#)).collect();
    format!(
        r#"{{"units": {{"1": {{"setup": {{"co size": {registers}, "di size": {registers}, "hr size": {registers}, "ir size": {registers}, "shared blocks": true, "type exception": false,
            "defaults": {{"value": {{"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "}},
                         "action": {{"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}}}}}},
            "invalid": [], "write": [], "bits": [], "uint16": [{}], "uint32": [], "float32": [], "float64": [], "string": [], "repeat": []}}}}}}"#,
        regs.join(",")
    )
}

/// The device config: the first half of the registers as u16 points, the rest as u32 points.
fn device_config(port: u16, registers: u16, coalesce: bool) -> ModbusConfig {
    let mut points = String::new();
    let half = registers / 2;
    for a in 0..half {
        points += &format!("[[devices.points]]\nentity = \"r{a}\"\ntable = \"holding\"\naddress = {a}\ntype = \"u16\"\n");
    }
    for a in (half..registers.saturating_sub(1)).step_by(2) {
        points += &format!("[[devices.points]]\nentity = \"r{a}\"\ntable = \"holding\"\naddress = {a}\ntype = \"u32\"\n");
    }
    let text = format!("[[devices]]\nname = \"bench\"\ntcp = \"127.0.0.1:{port}\"\ncoalesce = {coalesce}\ntimeout_ms = 2000\n{points}");
    let config: ModbusConfig = toml::from_str(&text).expect("bench config parses");
    config.validate().expect("bench config is valid");
    config
}

fn measure(rt: &tokio::runtime::Runtime, config: &ModbusConfig, seconds: u64) -> (PollStats, u64, Duration) {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let sinks = Sinks { ingest: tx, audit: None, metrics: Arc::new(Metrics::default()) };
    let (mut links, _) = poll::links(config, &vigil::config::ValidationConfig::default(), Instant::now());
    let link = &mut links[0];
    rt.block_on(async {
        link.poll_all_once(&sinks).await; // connect and warm up
        let started = Instant::now();
        let mut total = PollStats::default();
        let mut cycles = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            let s = link.poll_all_once(&sinks).await;
            total.points += s.points;
            total.requests += s.requests;
            cycles += 1;
        }
        (total, cycles, started.elapsed())
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let seconds = arg(&args, "--seconds", 5);
    let registers = arg(&args, "--registers", 240).clamp(4, 10_000) as u16;
    let sim = ModbusSim::start_tcp(&simulator_units(registers)).expect("start the pymodbus simulator (run tests/peers/install.sh)");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    println!("modbus_poll: pymodbus 3.16.1 simulator on TCP 127.0.0.1:{}, {registers} holding registers, {seconds} s per mode", sim.port());
    let mut rates = Vec::new();
    for coalesce in [true, false] {
        let config = device_config(sim.port(), registers, coalesce);
        let points_per_cycle: usize = config.devices[0].points.len();
        let (stats, cycles, took) = measure(&rt, &config, seconds);
        let rate = stats.points as f64 / took.as_secs_f64();
        rates.push(rate);
        println!(
            "  coalescing {:<3}: {:>9.0} points/s  {:>6.1} requests per cycle  {:>7.1} cycles/s  ({} points per cycle, {} cycles)",
            if coalesce { "on" } else { "off" },
            rate,
            stats.requests as f64 / cycles.max(1) as f64,
            cycles as f64 / took.as_secs_f64(),
            points_per_cycle,
            cycles
        );
    }
    println!("  speed-up from coalescing: {:.1}x", rates[0] / rates[1].max(f64::MIN_POSITIVE));
}
