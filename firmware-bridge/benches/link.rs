//! Benchmarks of the serial link codec (`cargo bench -p firmware-bridge --bench link`):
//! - gateway decoder throughput (MB/s of wire bytes, frames/s, readings/s), stream pushed in
//!   4 KiB reads like the agent's serial source;
//! - node encoder throughput on the host (frames/s; a microcontroller is 10-100x slower);
//! - wire bytes per reading by batch size, and what that means for a 115 200 baud line.
//!
//! Without `--bench` (as `cargo test --all-targets` / nextest run it) it does one small
//! iteration of each and checks the results, so the bench cannot rot.

use std::hint::black_box;
use std::time::{Duration, Instant};

use firmware_bridge::gateway::FrameDecoder;
use firmware_bridge::host::StdSerial;
use firmware_bridge::node::{Clock, Node, NodeConfig};
use firmware_bridge::wire::{encode_frame, FrameHeader, Quality, WireReading};

struct Tick(u32);
impl Clock for Tick {
    fn now_ms(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(100);
        self.0
    }
}

type Sink = StdSerial<Vec<u8>>;

/// Sensor-like values: a temperature with 0.01 °C noise (needs f32, 5 CBOR bytes).
fn value(i: usize) -> f32 {
    21.0 + ((i * 7919) % 1000) as f32 * 0.01
}

/// `frames` frames of `batch` readings, as the node sends them (ago_ms 0..batch*1000).
fn stream(frames: usize, batch: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut scratch, mut wire) = ([0u8; 512], [0u8; 512]);
    for f in 0..frames {
        let readings: Vec<WireReading> = (0..batch)
            .map(|i| WireReading { channel: (i % 4) as u8, ago_ms: ((batch - 1 - i) * 1000) as u32, value: value(f * batch + i), quality: Quality::Good })
            .collect();
        let n = encode_frame(&FrameHeader { node: 7, boot: 3, seq: f as u32 }, &readings, &mut scratch, &mut wire).unwrap();
        out.extend_from_slice(&wire[..n]);
    }
    out
}

fn decode_all(bytes: &[u8]) -> (usize, usize) {
    let mut d = FrameDecoder::new(512);
    let (mut frames, mut readings) = (0, 0);
    for chunk in bytes.chunks(4096) {
        d.push(chunk, |_, f| {
            if let Ok(f) = f {
                frames += 1;
                readings += f.readings.len();
                black_box(&f);
            }
        });
    }
    (frames, readings)
}

/// Runs `f` repeatedly for at least `min`; returns (iterations, elapsed).
fn time(min: Duration, mut f: impl FnMut()) -> (u32, Duration) {
    let start = Instant::now();
    let mut n = 0;
    while n == 0 || start.elapsed() < min {
        f();
        n += 1;
    }
    (n, start.elapsed())
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if std::env::args().any(|a| a == "--list") {
        return; // nextest lists tests; this target has none to list
    }
    let min = if bench { Duration::from_secs(2) } else { Duration::ZERO };
    let frames = if bench { 20_000 } else { 50 };

    // The node's own RAM (peripherals and clock excluded: zero-sized here). On a 32-bit MCU
    // the few usize fields are half as large.
    for (batch, max, size) in [
        (4, 64, std::mem::size_of::<Node<(), (), 4, 64>>()),
        (8, 128, std::mem::size_of::<Node<(), (), 8, 128>>()),
        (23, 256, std::mem::size_of::<Node<(), (), 23, 256>>()),
    ] {
        println!("node RAM, BATCH {batch:>2}, MAX_FRAME {max:>3}: {size} bytes (+ {} bytes of stack in flush)", std::mem::size_of::<WireReading>() * batch);
    }
    println!("wire bytes per reading (f32 values, ago_ms up to batch x 1 s, COBS + CRC-32 + delimiter):");
    println!("{:>6} {:>12} {:>14} {:>26}", "batch", "bytes/frame", "bytes/reading", "readings/s at 115200 8N1");
    for batch in [1usize, 4, 8, 16, 23] {
        let s = stream(100, batch);
        let per_frame = s.len() as f64 / 100.0;
        let per_reading = per_frame / batch as f64;
        // 10 bits per byte on the line (start + 8 data + stop).
        println!("{batch:>6} {per_frame:>12.1} {per_reading:>14.2} {:>26.0}", 11_520.0 / per_reading);
        assert!(per_reading < 40.0);
    }

    for batch in [8usize, 23] {
        let s = stream(frames, batch);
        let (frames_got, readings_got) = decode_all(&s);
        assert_eq!((frames_got, readings_got), (frames, frames * batch), "every frame decodes");
        let (n, el) = time(min, || {
            black_box(decode_all(black_box(&s)));
        });
        let secs = el.as_secs_f64() / f64::from(n);
        println!(
            "gateway decode, batch {batch:>2}: {:>7.1} MB/s  {:>9.0} frames/s  {:>10.0} readings/s  ({} bytes x {n} runs)",
            s.len() as f64 / secs / 1e6,
            frames as f64 / secs,
            (frames * batch) as f64 / secs,
            s.len()
        );
    }

    let (n, el) = time(min, || {
        let mut node: Node<Sink, Tick, 8, 128> = Node::new(NodeConfig { node_id: 1, boot_id: 1 }, Sink::new(Vec::new()), Tick(0));
        for i in 0..frames * 8 {
            node.record((i % 4) as u8, value(i), Quality::Good).unwrap();
        }
        black_box(node.release());
    });
    let secs = el.as_secs_f64() / f64::from(n);
    println!("node encode (host), batch  8: {:>9.0} frames/s  {:>10.0} readings/s", frames as f64 / secs, (frames * 8) as f64 / secs);
}
