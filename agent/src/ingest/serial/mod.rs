//! `[[ingest.serial]]`: readings from firmware-bridge sensor nodes on a serial port.
//!
//! Design constraints and invariants:
//! - **Codec apart from I/O.** `firmware_bridge::gateway` splits the byte stream into frames,
//!   checks them and tracks each node's sequence; [`SerialIngest`] turns its output into
//!   readings and dead letters (pure, unit-tested); [`run`] does the port I/O ([`tty`]).
//! - **Every frame is accounted for.** A frame becomes readings, or a dead letter with the
//!   frame's bytes and the reason (`undecodable` for framing, checksum and malformed bodies,
//!   `oversized` above `max_frame_bytes`; per reading `non_finite`, `timestamp_skew`,
//!   `unknown_entity`, `invalid_field`), or — a duplicate of a frame already taken — is
//!   dropped and counted. Gaps in a node's sequence numbers (frames lost on the line, or by the
//!   node) are counted per node and logged; so are node restarts.
//! - **Time.** A reading's event time is the moment the read returned minus the reading's
//!   `ago_ms` (node clock): accurate to the UART buffering delay, with no clock on the node.
//! - **Delivery.** A serial line has no acknowledgement: a frame counts as received once it is
//!   read. Frames read but not yet committed when the agent is killed are lost (a graceful
//!   stop commits them). When the commit log is behind, this thread blocks on the bounded
//!   ingest channel; the kernel's tty buffer then fills and the node's frames are dropped at
//!   the UART, which shows up as gaps once reading resumes.
//! - **One thread per port**, blocking reads that return at least every 100 ms (termios
//!   `VTIME`), so a stop request is seen promptly. A port that fails or disappears (USB adapter
//!   unplugged) is reopened every `reopen_ms`; the frame decoder starts afresh.

pub mod tty;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use firmware_bridge::gateway::{Frame, FrameDecoder, Rejection, Sequence, SequenceTracker};
use firmware_bridge::wire::Quality as WireQuality;

use super::decode::{check_entity, check_event_time, check_value};
use super::topic::render;
use super::IngestBatch;
use crate::config::{SerialPortConfig, ValidationConfig};
use crate::dlq::{DlqEntry, DlqReason};
use crate::metrics::Metrics;
use crate::reading::{now_ms, EpochMs, Quality, Reading, SourceKind};

/// Bytes asked for per read.
const READ_BUFFER: usize = 4096;

/// One port's decoding state: bytes in, readings and dead letters out.
pub struct SerialIngest {
    /// The port's path, as DLQ `topic` and metrics/log label.
    port: String,
    entity: String,
    validation: ValidationConfig,
    decoder: FrameDecoder,
    tracker: SequenceTracker,
}

impl SerialIngest {
    pub fn new(cfg: &SerialPortConfig, validation: &ValidationConfig) -> SerialIngest {
        SerialIngest {
            port: cfg.port.display().to_string(),
            entity: cfg.entity.clone(),
            validation: validation.clone(),
            decoder: FrameDecoder::new(cfg.max_frame_bytes),
            tracker: SequenceTracker::default(),
        }
    }

    /// Decodes `bytes` received at `now`; the result holds what the complete frames among
    /// them became (an unfinished frame waits for its next bytes).
    pub fn on_bytes(&mut self, bytes: &[u8], now: EpochMs, metrics: &Metrics) -> IngestBatch {
        let mut batch = IngestBatch { readings: Vec::new(), rejects: Vec::new(), on_commit: None };
        let SerialIngest { port, entity, validation, decoder, tracker } = self;
        let mut touched: Vec<u16> = Vec::new();
        decoder.push(bytes, |raw, frame| {
            let dead = |reason, detail| DlqEntry { source: SourceKind::Serial, topic: port.clone(), raw: raw.to_vec(), reason, detail, received_ms: now };
            let frame = match frame {
                Ok(frame) => frame,
                Err(rejection) => {
                    metrics.serial_bad_frames.inc();
                    tracing::debug!(port = %port, reason = rejection.kind(), bytes = raw.len(), "serial: frame rejected");
                    let reason = match rejection {
                        Rejection::Oversized { .. } => DlqReason::Oversized,
                        _ => DlqReason::Undecodable,
                    };
                    batch.rejects.push(dead(reason, format!("{}: {rejection}", rejection.kind())));
                    return;
                }
            };
            let h = frame.header;
            let verdict = tracker.observe(&h, frame.readings.len());
            let counts = tracker.counts(h.node).unwrap_or_default();
            if !touched.contains(&h.node) {
                touched.push(h.node);
            }
            match verdict {
                Sequence::First => tracing::info!(port = %port, node = h.node, boot = h.boot, seq = h.seq, "serial: first frame from node"),
                Sequence::InOrder => {}
                Sequence::Gap { missing } => tracing::warn!(
                    port = %port, node = h.node, seq = h.seq, missing, missing_total = counts.missing_frames,
                    "serial: sequence gap, frames lost"
                ),
                Sequence::Restart => tracing::info!(port = %port, node = h.node, boot = h.boot, seq = h.seq, restarts = counts.restarts, "serial: node restarted"),
                Sequence::Duplicate => {
                    tracing::info!(port = %port, node = h.node, seq = h.seq, duplicates_total = counts.duplicate_frames, "serial: duplicate frame dropped");
                    return;
                }
            }
            readings_of(&frame, entity, validation, now, |r| match r {
                Ok(r) => batch.readings.push(r),
                Err((reason, detail)) => batch.rejects.push(dead(reason, detail)),
            });
        });
        // Once per read, not per frame: the per-node metrics sit behind a lock.
        for node in touched {
            metrics.serial_nodes.set(port, node, tracker.counts(node).unwrap_or_default());
        }
        batch
    }

    /// Per-node counters so far.
    pub fn nodes(&self) -> impl Iterator<Item = (u16, crate::metrics::SerialNodeCounts)> + '_ {
        self.tracker.all()
    }
}

/// `vigil dlq replay` of a serial dead letter: decodes the stored frame again with the current
/// settings of its port, as if it arrived at its original receive time (so event times come
/// out as they would have). `None` when the entry is not a frame from a configured port (a
/// late reading dead-lettered by the pipeline, a port no longer configured). A frame with
/// several readings is replayed whole: readings that were accepted the first time are
/// committed again, and the windows ignore the duplicates (as for MQTT arrays).
pub fn replay(ports: &[SerialPortConfig], validation: &ValidationConfig, entry: &DlqEntry) -> Option<IngestBatch> {
    if entry.source != SourceKind::Serial || entry.reason == DlqReason::Late {
        return None;
    }
    let port = ports.iter().find(|p| p.port.display().to_string() == entry.topic)?;
    let mut bytes = entry.raw.clone();
    bytes.push(0);
    Some(SerialIngest::new(port, validation).on_bytes(&bytes, entry.received_ms, &Metrics::default()))
}

/// The readings of an accepted frame, each validated like any source's.
fn readings_of(frame: &Frame, entity: &str, validation: &ValidationConfig, now: EpochMs, mut out: impl FnMut(Result<Reading, (DlqReason, String)>)) {
    let h = frame.header;
    let node = h.node.to_string();
    for r in &frame.readings {
        let where_ = || format!("node {} channel {}", h.node, r.channel);
        if let Err(e) = check_value(validation, r.value) {
            out(Err((e.reason, format!("{}: {}", where_(), e.detail))));
            continue;
        }
        let channel = r.channel.to_string();
        let entity = render(entity, &[("node", &node), ("channel", &channel)]);
        let event_time_ms = r.event_time_ms(now);
        if let Err(e) = check_event_time(validation, event_time_ms, now).and_then(|()| check_entity(validation, &entity)) {
            out(Err((e.reason, format!("{}: {}", where_(), e.detail))));
            continue;
        }
        out(Ok(Reading {
            entity,
            event_time_ms,
            value: r.value,
            quality: match r.quality {
                WireQuality::Good => Quality::Good,
                WireQuality::Uncertain => Quality::Uncertain,
                WireQuality::Bad => Quality::Bad,
            },
            source: SourceKind::Serial,
            ingest_time_ms: now,
            seq: 0,
            source_seq: Some(h.seq.into()),
        }));
    }
}

/// Reads the port until `stop` is set or the commit log goes away, reopening it after errors.
pub fn run(cfg: SerialPortConfig, validation: ValidationConfig, ingest: Sender<IngestBatch>, metrics: Arc<Metrics>, stop: Arc<AtomicBool>) {
    let mut link = SerialIngest::new(&cfg, &validation);
    let port_name = link.port.clone();
    let reopen = Duration::from_millis(cfg.reopen_ms);
    let mut buf = vec![0u8; READ_BUFFER];
    'port: while !stop.load(Ordering::Relaxed) {
        let mut port = match tty::open(&cfg.port, cfg.baud) {
            Ok(port) => {
                tracing::info!(port = %port_name, baud = cfg.baud, "serial port opened");
                port
            }
            Err(e) => {
                tracing::warn!(port = %port_name, error = %e, retry_ms = cfg.reopen_ms, "cannot open serial port");
                wait_unless_stopped(reopen, &stop);
                continue;
            }
        };
        // Bytes of a frame cut off by the failure are not completed by the next port's bytes.
        link.decoder = FrameDecoder::new(cfg.max_frame_bytes);
        metrics.serial_ports_open.inc();
        let open = OnDrop(|| metrics.serial_ports_open.dec());
        while !stop.load(Ordering::Relaxed) {
            match port.read(&mut buf) {
                // VTIME elapsed without data.
                Ok(0) => {}
                Ok(n) => {
                    let batch = link.on_bytes(&buf[..n], now_ms(), &metrics);
                    if !(batch.readings.is_empty() && batch.rejects.is_empty()) && ingest.send(batch).is_err() {
                        break 'port;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(port = %port_name, error = %e, retry_ms = cfg.reopen_ms, "serial port read failed; reopening");
                    break;
                }
            }
        }
        drop(open);
        drop(port);
        wait_unless_stopped(reopen, &stop);
    }
    for (node, c) in link.nodes() {
        tracing::info!(
            port = %port_name, node, frames = c.frames, readings = c.readings, missing_frames = c.missing_frames,
            duplicate_frames = c.duplicate_frames, restarts = c.restarts, "serial node summary"
        );
    }
}

/// Runs a closure when dropped (on every way out of a block).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Waits `d` (a retry delay, not synchronisation), returning early when `stop` is set.
fn wait_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_bridge::wire::{encode_frame, FrameHeader, WireReading};

    fn frame(node: u16, seq: u32, readings: &[(u8, u32, f32)]) -> Vec<u8> {
        let r: Vec<WireReading> = readings.iter().map(|&(channel, ago_ms, value)| WireReading { channel, ago_ms, value, quality: WireQuality::Good }).collect();
        let (mut scratch, mut wire) = ([0u8; 512], [0u8; 512]);
        let n = encode_frame(&FrameHeader { node, boot: 1, seq }, &r, &mut scratch, &mut wire).unwrap();
        wire[..n].to_vec()
    }

    fn link(extra: &str) -> SerialIngest {
        let cfg: SerialPortConfig = toml::from_str(&format!("port = \"/dev/ttyX\"\nentity = \"n{{node}}.c{{channel}}\"\n{extra}")).unwrap();
        SerialIngest::new(&cfg, &ValidationConfig::default())
    }

    #[test]
    fn frames_become_readings_with_wall_clock_times() {
        let metrics = Metrics::default();
        let mut l = link("");
        let now = 1_700_000_000_000;
        let mut bytes = frame(4, 0, &[(0, 1500, 20.5), (1, 0, -3.0)]);
        bytes.extend(frame(4, 1, &[(0, 500, 21.0)]));
        let b = l.on_bytes(&bytes, now, &metrics);
        assert!(b.rejects.is_empty());
        let got: Vec<(&str, i64, f64, Option<u64>)> = b.readings.iter().map(|r| (r.entity.as_str(), r.event_time_ms, r.value, r.source_seq)).collect();
        assert_eq!(got, vec![("n4.c0", now - 1500, 20.5, Some(0)), ("n4.c1", now, -3.0, Some(0)), ("n4.c0", now - 500, 21.0, Some(1))]);
        assert!(b.readings.iter().all(|r| r.source == SourceKind::Serial && r.ingest_time_ms == now));
    }

    #[test]
    fn bad_frames_are_dead_letters_and_gaps_and_duplicates_are_counted() {
        let metrics = Metrics::default();
        let mut l = link("max_frame_bytes = 40");
        let now = 1_700_000_000_000;
        // A bit flipped in the body after the CRC was computed (COBS intact).
        let corrupt = {
            let r = [WireReading { channel: 0, ago_ms: 0, value: 1.0, quality: WireQuality::Good }];
            let mut body = [0u8; 64];
            let n = firmware_bridge::wire::encode_body(&FrameHeader { node: 1, boot: 1, seq: 0 }, &r, &mut body).unwrap();
            body[2] ^= 0x02;
            let mut wire = [0u8; 80];
            let m = firmware_bridge::cobs::encode(&body[..n], &mut wire).unwrap();
            [&wire[..m], &[0]].concat()
        };
        let big = frame(1, 0, &[(0, 0, 0.1); 10]);
        let good0 = frame(1, 0, &[(0, 0, 1.0)]);
        let good3 = frame(1, 3, &[(0, 0, 2.0), (1, 0, f32::NAN)]);
        let stream = [corrupt.clone(), big, good0.clone(), good0, good3].concat();
        let b = l.on_bytes(&stream, now, &metrics);
        assert_eq!(b.readings.iter().map(|r| r.value).collect::<Vec<_>>(), vec![1.0, 2.0]);
        let reasons: Vec<(DlqReason, &str)> = b.rejects.iter().map(|e| (e.reason, e.detail.split(':').next().unwrap())).collect();
        assert_eq!(reasons, vec![(DlqReason::Undecodable, "checksum"), (DlqReason::Oversized, "oversized"), (DlqReason::NonFinite, "node 1 channel 1")]);
        assert_eq!(b.rejects[0].raw, corrupt[..corrupt.len() - 1]);
        assert!(b.rejects.iter().all(|e| e.topic == "/dev/ttyX" && e.source == SourceKind::Serial));
        assert_eq!(metrics.serial_bad_frames.get(), 2);
        let nodes = metrics.serial_nodes.snapshot();
        assert_eq!(nodes.len(), 1);
        let (port, node, c) = &nodes[0];
        assert_eq!((port.as_str(), *node), ("/dev/ttyX", 1));
        assert_eq!((c.frames, c.missing_frames, c.duplicate_frames), (2, 2, 1));
    }

    #[test]
    fn replay_decodes_a_dead_letter_with_the_current_config() {
        let metrics = Metrics::default();
        let cfg: SerialPortConfig = toml::from_str("port = \"/dev/ttyX\"").unwrap();
        let strict = ValidationConfig { known_entities: vec!["serial.1.0".into()], ..ValidationConfig::default() };
        let received = 1_700_000_000_000;
        let b = SerialIngest::new(&cfg, &strict).on_bytes(&frame(2, 5, &[(0, 250, 4.5)]), received, &metrics);
        let entry = &b.rejects[0];
        assert_eq!(entry.reason, DlqReason::UnknownEntity);
        // Still unknown with the same config; accepted once the entity is allowed.
        let again = replay(std::slice::from_ref(&cfg), &strict, entry).unwrap();
        assert_eq!((again.readings.len(), again.rejects.len()), (0, 1));
        let open = ValidationConfig::default();
        let again = replay(std::slice::from_ref(&cfg), &open, entry).unwrap();
        assert_eq!(again.readings.len(), 1);
        assert_eq!((again.readings[0].entity.as_str(), again.readings[0].event_time_ms), ("serial.2.0", received - 250));
        let other: SerialPortConfig = toml::from_str("port = \"/dev/ttyY\"").unwrap();
        assert!(replay(&[other], &open, entry).is_none(), "port no longer configured");
    }

    #[test]
    fn readings_are_validated_like_any_source() {
        let metrics = Metrics::default();
        let cfg: SerialPortConfig = toml::from_str("port = \"/dev/ttyX\"").unwrap();
        let validation = ValidationConfig { known_entities: vec!["serial.2.0".into()], max_past_skew_s: 60, ..ValidationConfig::default() };
        let mut l = SerialIngest::new(&cfg, &validation);
        let b = l.on_bytes(&frame(2, 0, &[(0, 0, 1.0), (1, 0, 2.0), (0, 120_000, 3.0)]), 1_700_000_000_000, &metrics);
        assert_eq!(b.readings.len(), 1);
        assert_eq!(b.readings[0].entity, "serial.2.0");
        let reasons: Vec<DlqReason> = b.rejects.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, vec![DlqReason::UnknownEntity, DlqReason::TimestampSkew]);
    }
}
