//! Serial sensor nodes end to end. socat provides a pair of connected pseudo-terminals (a
//! null-modem cable); the agent reads one end through `[[ingest.serial]]`; the real
//! firmware-bridge node code, running on the host with embedded-hal-mock sensors (a TMP102 on
//! I2C, an MCP3008 on SPI — the mock peripherals are the only fakes: no microcontroller runs
//! here), writes its frames into the other end.
//!
//! Asserts: every reading the nodes sent arrives in the outbox exactly once with its entity,
//! exact value and a wall-clock time derived from the node's relative timestamps; line noise
//! and a frame with a flipped bit become DLQ records with their reasons; a duplicated frame is
//! dropped; a frame lost to a serial write error is reported as a sequence gap; per-node counts
//! are logged and exported on /metrics; after the cable is unplugged and plugged in again the
//! agent reopens the port and reads on; the agent stops cleanly and never panics.

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cloud_uplink::Body;
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTx};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as SpiTx};
use embedded_hal_nb::serial::{ErrorKind, ErrorType, Write as SerialWrite};
use firmware_bridge::drivers::{Mcp3008, Tmp102};
use firmware_bridge::gateway::FrameDecoder;
use firmware_bridge::host::StdSerial;
use firmware_bridge::node::{Clock, Node, NodeConfig, NodeError};
use firmware_bridge::wire::{self, FrameHeader, Quality, WireReading};
use support::*;
use vigil_test_harness::{http_get, PtyPair};

/// The node's millisecond clock: time since the node started, like a microcontroller's
/// SysTick counter.
#[derive(Clone)]
struct UptimeClock(Instant);

impl Clock for UptimeClock {
    fn now_ms(&mut self) -> u32 {
        self.0.elapsed().as_millis() as u32
    }
}

/// The nodes' side of the line: the pty end as an embedded-hal-nb serial port. Bytes go out
/// on `flush` (the node flushes after each frame); `fail_next_frame` makes the 4th byte of the
/// next frame fail, as a UART overrun would.
struct PtyUart {
    tty: std::fs::File,
    buf: Vec<u8>,
    fail_next_frame: bool,
    /// (wall-clock ms when written, bytes) of every flush.
    flushed: Rc<RefCell<Vec<Flushed>>>,
}

impl ErrorType for PtyUart {
    type Error = ErrorKind;
}

impl SerialWrite<u8> for PtyUart {
    fn write(&mut self, b: u8) -> nb::Result<(), ErrorKind> {
        if self.fail_next_frame && self.buf.len() == 4 {
            self.fail_next_frame = false;
            return Err(nb::Error::Other(ErrorKind::Overrun));
        }
        self.buf.push(b);
        Ok(())
    }

    fn flush(&mut self) -> nb::Result<(), ErrorKind> {
        let written_ms = now_ms();
        self.tty.write_all(&self.buf).map_err(|_| nb::Error::Other(ErrorKind::Other))?;
        self.flushed.borrow_mut().push((written_ms, std::mem::take(&mut self.buf)));
        Ok(())
    }
}

/// When a flush was written (wall-clock ms) and its bytes.
type Flushed = (i64, Vec<u8>);

/// One expected reading: (entity, value, node-clock sample time, node id).
type Expected = (String, f64, u32, u16);

fn tmp102_script(n: usize) -> (Vec<I2cTx>, Vec<f32>) {
    // 20.0 °C + i LSB (0.0625 °C): exact in f32.
    let raw: Vec<u16> = (0..n).map(|i| 320 + i as u16).collect();
    let tx = raw.iter().map(|r| I2cTx::write_read(0x48, vec![0x00], (r << 4).to_be_bytes().to_vec())).collect();
    (tx, raw.iter().map(|&r| r as f32 * 0.0625).collect())
}

fn mcp3008_script(n: usize, channel: u8) -> (Vec<SpiTx<u8>>, Vec<f32>) {
    let raw: Vec<u16> = (0..n).map(|i| 500 + (i as u16 * 7) % 300).collect();
    let mut tx = Vec::new();
    for r in &raw {
        tx.push(SpiTx::transaction_start());
        tx.push(SpiTx::transfer(vec![0x01, 0x80 | (channel << 4), 0x00], vec![0x00, (r >> 8) as u8, *r as u8]));
        tx.push(SpiTx::transaction_end());
    }
    (tx, raw.iter().map(|&r| r as f32 * 3.3 / 1023.0).collect())
}

/// Moves readings recorded by a node into `expected` once they were sent, or into `lost` when
/// the frame carrying them failed.
fn account<E: std::fmt::Debug>(result: Result<(), NodeError<ErrorKind, E>>, pending_after: usize, reading: Expected, in_flight: &mut Vec<Expected>, expected: &mut Vec<Expected>, lost: &mut Vec<Expected>) {
    in_flight.push(reading);
    match result {
        Ok(()) if pending_after == 0 => expected.append(in_flight),
        Ok(()) => {}
        Err(NodeError::Write(_)) => lost.append(in_flight),
        Err(e) => panic!("sensor error {e:?}"),
    }
}

/// A frame with a bit flipped after its CRC was computed (COBS framing intact).
fn corrupted_frame() -> Vec<u8> {
    let r = [WireReading { channel: 9, ago_ms: 0, value: 99.0, quality: Quality::Good }];
    let mut body = [0u8; 64];
    let n = wire::encode_body(&FrameHeader { node: 9, boot: 1, seq: 0 }, &r, &mut body).unwrap();
    body[n - 6] ^= 0x01;
    let mut out = [0u8; 80];
    let m = firmware_bridge::cobs::encode(&body[..n], &mut out).unwrap();
    [&out[..m], &[0u8][..]].concat()
}

#[test]
fn serial_nodes_feed_the_agent_over_a_pty() {
    let mut pty = PtyPair::start().expect("socat pty pair");
    let dir = tempfile::tempdir().unwrap();
    let (data, outbox) = (dir.path().join("data"), dir.path().join("outbox"));
    let config = dir.path().join("vigil.toml");
    let id = "serial-e2e";
    std::fs::write(
        &config,
        format!(
            "{}\n[[ingest.serial]]\nport = {}\nbaud = 115200\nentity = \"plant.node{{node}}.ch{{channel}}\"\nmax_frame_bytes = 128\nreopen_ms = 100\n",
            base_config(id, &data, &outbox),
            q(pty.a())
        ),
    )
    .unwrap();
    let mut agent = spawn_agent(&config);
    agent.wait_for_line(|l| l.contains("serial port opened"), Duration::from_secs(30)).expect("agent opens the port");

    // Two nodes share the line (as on an RS-485 bus), each writing whole frames.
    let tty = std::fs::OpenOptions::new().write(true).open(pty.b()).expect("open the nodes' end");
    let mut raw_tty = tty.try_clone().unwrap();
    let flushed = Rc::new(RefCell::new(Vec::new()));
    let uart = |tty| PtyUart { tty, buf: Vec::new(), fail_next_frame: false, flushed: flushed.clone() };
    let clock = UptimeClock(Instant::now());
    let mut node1: Node<PtyUart, UptimeClock, 4, 128> = Node::new(NodeConfig { node_id: 1, boot_id: 77 }, uart(tty.try_clone().unwrap()), clock.clone());
    let mut node2: Node<PtyUart, UptimeClock, 5, 128> = Node::new(NodeConfig { node_id: 2, boot_id: 5 }, uart(tty), clock.clone());

    const N: usize = 60;
    let (i2c_script, temps) = tmp102_script(N);
    let (spi_script, volts) = mcp3008_script(N, 3);
    let mut i2c = I2cMock::new(&i2c_script);
    let mut spi = SpiMock::new(&spi_script);
    let mut tmp102 = Tmp102::new(i2c.clone(), 0x48);
    let mut adc = Mcp3008::new(spi.clone(), 3, 3.3);

    let (mut expected, mut lost) = (Vec::new(), Vec::new());
    let (mut flight1, mut flight2) = (Vec::new(), Vec::new());
    // One sample per node every 10 ms (the sensors' pace: sampling, not synchronisation);
    // node 1 sends every 4 samples, node 2 every 5. Along the way: a UART error on one of
    // node 1's frames, a frame of node 2 sent twice, line noise, and a frame with a flipped bit.
    let mut clock = clock;
    for i in 0..N {
        std::thread::sleep(Duration::from_millis(10));
        let t = clock.now_ms();
        if i == 21 {
            node1.serial().fail_next_frame = true;
        }
        let r = node1.sample(0, &mut tmp102);
        account(r, node1.pending(), ("plant.node1.ch0".into(), temps[i] as f64, t, 1), &mut flight1, &mut expected, &mut lost);
        let before = flushed.borrow().len();
        let r = node2.sample(3, &mut adc);
        account(r, node2.pending(), ("plant.node2.ch3".into(), volts[i] as f64, t, 2), &mut flight2, &mut expected, &mut lost);
        if i == 29 {
            let again = flushed.borrow()[before].1.clone();
            raw_tty.write_all(&again).unwrap();
        }
        if i == 33 {
            raw_tty.write_all(b"\x13\x37 line noise \xfe\xff\x00").unwrap();
        }
        if i == 45 {
            raw_tty.write_all(&corrupted_frame()).unwrap();
        }
    }
    node1.flush().unwrap();
    node2.flush().unwrap();
    expected.append(&mut flight1);
    expected.append(&mut flight2);
    i2c.done();
    spi.done();
    assert_eq!(lost.len(), 4, "one frame of node 1 was lost to the write error");
    assert_eq!(node1.stats().write_errors, 1);
    assert_eq!(expected.len(), 2 * N - 4);

    // --- every sent reading arrives, once, with its value and a wall-clock time -------------
    let records = wait_for_outbox(&outbox, Duration::from_secs(60), Some(&agent), "every serial reading and 2 dead letters", |recs| {
        readings(recs).len() >= expected.len() && recs.iter().filter(|r| matches!(r.body, Body::Dlq { .. })).count() >= 2
    });
    let got = readings(&records);
    assert_eq!(got.len(), expected.len(), "no duplicates, nothing lost beyond the failed frame");
    let mut by_key: BTreeMap<(String, u64), (i64, f64)> = BTreeMap::new();
    for (e, t, v) in &got {
        assert!(by_key.insert((e.clone(), v.to_bits()), (*t, *v)).is_none(), "duplicate reading {e} {v}");
    }
    // Wall-clock sample time: the agent maps a reading to (receive time - ago_ms). The test
    // knows when each frame was written (`w`) and its readings' ago_ms, so every event time
    // must be w - ago_ms plus the time the bytes took to reach the agent (>= 0, small).
    let mut written: BTreeMap<(String, u64), i64> = BTreeMap::new();
    let mut decoder = FrameDecoder::new(128);
    for (w, bytes) in flushed.borrow().iter() {
        decoder.push(bytes, |_, frame| {
            if let Ok(f) = frame {
                for r in &f.readings {
                    let entity = format!("plant.node{}.ch{}", f.header.node, r.channel);
                    written.insert((entity, r.value.to_bits()), r.event_time_ms(*w));
                }
            }
        });
    }
    let mut transit = Vec::new();
    for (entity, value, t, _) in &expected {
        let key = (entity.clone(), value.to_bits());
        let (event, v) = by_key.remove(&key).unwrap_or_else(|| panic!("{entity} = {value} (node time {t}) missing from the outbox"));
        assert_eq!(v, *value, "exact value");
        let at_write = written[&key];
        assert!(event >= at_write && event - at_write <= 5_000, "{entity} = {value}: event time {event}, written at {at_write} (node time {t})");
        transit.push(event - at_write);
    }
    assert!(by_key.is_empty(), "readings that were never sent: {by_key:?}");
    transit.sort();
    eprintln!("write -> agent receive time: median {} ms, max {} ms", transit[transit.len() / 2], transit.last().unwrap());
    let serial_readings = records.iter().filter(|r| matches!(&r.body, Body::Reading { source, .. } if source == "serial")).count();
    assert_eq!(serial_readings, expected.len());

    // --- bad frames: DLQ records with reasons --------------------------------------------------
    let dlq: Vec<(String, String)> = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Dlq { source, topic, reason, .. } => {
                assert_eq!(source, "serial");
                assert_eq!(topic.as_deref(), Some(pty.a().display().to_string().as_str()));
                Some((reason.clone(), String::new()))
            }
            _ => None,
        })
        .collect();
    eprintln!("dead letters: {dlq:?}");
    assert!(dlq.iter().any(|(r, _)| r.starts_with("undecodable: checksum: CRC-32 mismatch")), "{dlq:?}");
    assert!(dlq.iter().all(|(r, _)| r.starts_with("undecodable: ")), "{dlq:?}");

    // --- gaps and duplicates in the log -------------------------------------------------------
    agent
        .wait_for_line(|l| l.contains("serial: sequence gap") && l.contains("node=1") && l.contains("missing=1"), Duration::from_secs(10))
        .expect("the lost frame is logged as a gap");
    agent.wait_for_line(|l| l.contains("serial: duplicate frame dropped") && l.contains("node=2"), Duration::from_secs(10)).expect("the duplicate is logged");

    // --- the same counts on /metrics (parsed by the reference Prometheus client) ---------------
    let page = http_get(api_addr(&agent), "/metrics").expect("GET /metrics");
    let samples = parse_prometheus(&String::from_utf8_lossy(&page.body));
    let port = pty.a().display().to_string();
    let node = |name: &str, n: &str| prom_value(&samples, name, &[("port", &port), ("node", n)]);
    assert_eq!(node("vigil_serial_missing_frames_total", "1"), Some(1.0));
    assert_eq!(node("vigil_serial_duplicate_frames_total", "2"), Some(1.0));
    assert_eq!(node("vigil_serial_duplicate_frames_total", "1"), Some(0.0));
    assert_eq!(
        node("vigil_serial_readings_total", "1").zip(node("vigil_serial_readings_total", "2")).map(|(a, b)| a + b),
        Some(expected.len() as f64)
    );
    assert_eq!(prom_value(&samples, "vigil_serial_bad_frames_total", &[]), Some(3.0), "partial frame, line noise, flipped bit");
    assert_eq!(prom_value(&samples, "vigil_readings_in_total", &[("source", "serial")]), Some(expected.len() as f64));
    assert_eq!(prom_value(&samples, "vigil_serial_ports_open", &[]), Some(1.0));
    // A serial-only gateway is ready without MQTT.
    assert_eq!(http_get(api_addr(&agent), "/ready").expect("GET /ready").status, 200);

    // --- the cable is pulled out and plugged in again: the agent reopens the port ---------------
    let before = agent.line_count();
    drop((node1, node2, raw_tty));
    pty.replug().expect("socat replugged");
    agent
        .wait_for_line_after(before, |l| l.contains("serial port read failed; reopening") || l.contains("cannot open serial port"), Duration::from_secs(30))
        .expect("the agent notices the unplugged port");
    agent.wait_for_line_after(before, |l| l.contains("serial port opened"), Duration::from_secs(30)).expect("the agent reopens the port");
    let tty = std::fs::OpenOptions::new().write(true).open(pty.b()).expect("open the nodes' end again");
    let mut node3: Node<StdSerial<std::fs::File>, UptimeClock, 2, 64> = Node::new(NodeConfig { node_id: 3, boot_id: 1 }, StdSerial::new(tty), UptimeClock(Instant::now()));
    node3.record(0, 123.25, Quality::Good).unwrap();
    node3.record(1, -7.5, Quality::Uncertain).unwrap();
    let records = wait_for_outbox(&outbox, Duration::from_secs(30), Some(&agent), "node 3's readings after the replug", |recs| {
        readings(recs).iter().filter(|(e, _, _)| e.starts_with("plant.node3.")).count() == 2
    });
    let uncertain = records.iter().any(|r| {
        matches!(&r.body, Body::Reading { entity, value, quality, .. } if entity == "plant.node3.ch1" && *value == -7.5 && *quality == cloud_uplink::Quality::Uncertain)
    });
    assert!(uncertain, "quality travels with the reading");

    agent.terminate().unwrap();
    let status = agent.wait_timeout(Duration::from_secs(30)).expect("agent stops on SIGTERM");
    assert!(status.success(), "agent exit status {status}");
    agent
        .wait_for_line(|l| l.contains("serial node summary") && l.contains("node=1") && l.contains("missing_frames=1") && l.contains("duplicate_frames=0"), Duration::from_secs(5))
        .expect("node 1 summary");
    agent
        .wait_for_line(|l| l.contains("serial node summary") && l.contains("node=2") && l.contains("missing_frames=0") && l.contains("duplicate_frames=1"), Duration::from_secs(5))
        .expect("node 2 summary");
    assert_no_panic(&agent);
    drop(pty);
}
