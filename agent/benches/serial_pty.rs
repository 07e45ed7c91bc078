//! End-to-end serial ingest rate: `cargo bench -p vigil-agent --bench serial_pty`.
//!
//! socat provides a pty pair; the agent (release build) reads one end through
//! `[[ingest.serial]]`; this process encodes frames with the real node code (4 nodes × 4
//! channels, 8 readings per frame) and writes them into the other end as fast as the pty
//! takes them (a pty has no baud rate: this measures the agent, not a UART). The rate is
//! readings durably committed per second (`vigil_readings_in_total{source="serial"}` on the
//! agent's /metrics), from the first byte written until the last reading is committed; the
//! agent's frame and gap counters show whether anything was lost. `VIGIL_SERIAL_BENCH_N`
//! sets the number of readings (default 200 000).
//!
//! Without `--bench` (`cargo test --all-targets`, nextest) it does nothing: the
//! `serial_ingest` test covers correctness.

#[path = "../../tests/support.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use firmware_bridge::host::StdSerial;
use firmware_bridge::node::{Clock, Node, NodeConfig};
use firmware_bridge::wire::Quality;
use support::*;
use vigil_test_harness::{http_get, PtyPair};

struct Uptime(Instant);
impl Clock for Uptime {
    fn now_ms(&mut self) -> u32 {
        self.0.elapsed().as_millis() as u32
    }
}

/// Collects a node's bytes; the bench writes them to the pty in large chunks.
type Buffer = StdSerial<Vec<u8>>;

fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("VIGIL_SERIAL_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let pty = PtyPair::start().expect("socat");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[ingest.serial]]\nport = {}\nbaud = 115200\nentity = \"bench.n{{node}}.c{{channel}}\"\n",
            base_config("serial-bench", &dir.path().join("data"), &dir.path().join("outbox")),
            q(pty.a())
        ),
    )
    .unwrap();
    let agent = spawn_agent(&config);
    agent.wait_for_line(|l| l.contains("serial port opened"), Duration::from_secs(30)).expect("port opened");
    let api = api_addr(&agent);

    // Encode everything first (the node side is not what is measured), interleaving the nodes.
    let clock = Instant::now();
    let mut nodes: Vec<Node<Buffer, Uptime, 8, 128>> =
        (1..=4).map(|id| Node::new(NodeConfig { node_id: id, boot_id: 1 }, Buffer::new(Vec::new()), Uptime(clock))).collect();
    let mut wire = Vec::new();
    for i in 0..n {
        let node = &mut nodes[i % 4];
        node.record(((i / 4) % 4) as u8, 20.0 + (i % 1000) as f32 * 0.01, Quality::Good).unwrap();
        if node.pending() == 0 {
            wire.append(node.serial().get_mut());
        }
    }
    for node in &mut nodes {
        node.flush().unwrap();
        wire.append(node.serial().get_mut());
    }
    let frames: u32 = nodes.iter().map(|n| n.stats().frames_sent).sum();

    let mut tty = std::fs::OpenOptions::new().write(true).open(pty.b()).unwrap();
    let start = Instant::now();
    for chunk in wire.chunks(4096) {
        tty.write_all(chunk).unwrap();
    }
    let written = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let page = loop {
        let page = String::from_utf8_lossy(&http_get(api, "/metrics").expect("metrics").body).into_owned();
        if metric(&page, "vigil_readings_in_total{source=\"serial\"}") as usize >= n {
            break page;
        }
        assert!(Instant::now() < deadline, "timed out; agent:\n{}", agent.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let missing: f64 = page.lines().filter(|l| l.starts_with("vigil_serial_missing_frames_total")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
    println!("serial ingest over a pty: {n} readings in {frames} frames ({} bytes, {:.1} bytes/reading)", wire.len(), wire.len() as f64 / n as f64);
    println!("  written in {:.2} s; all committed after {:.2} s", written.as_secs_f64(), elapsed.as_secs_f64());
    println!("  {:.0} readings/s, {:.0} frames/s, {:.2} MB/s", n as f64 / elapsed.as_secs_f64(), f64::from(frames) / elapsed.as_secs_f64(), wire.len() as f64 / elapsed.as_secs_f64() / 1e6);
    println!("  bad frames {}, missing frames {missing}", metric(&page, "vigil_serial_bad_frames_total"));
    println!("  agent RSS {:.1} MB", metric(&page, "process_resident_memory_bytes") / 1e6);
}
