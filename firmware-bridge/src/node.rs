//! The sensor-node side: sample sensors, batch readings, send frames. `no_std`, no allocator.
//!
//! Design constraints:
//! - **Fixed memory.** A [`Node`] holds at most `BATCH` pending readings (a `heapless::Vec`) and
//!   two `MAX_FRAME`-byte buffers; nothing grows. `BATCH` is 1..=[`MAX_READINGS`] and
//!   `MAX_FRAME` at least [`MIN_FRAME_BYTES`] (both checked at compile time).
//! - **A frame never exceeds `MAX_FRAME` bytes** on the wire, delimiter included: when the
//!   pending readings do not fit one frame they are split over several.
//! - **No panics, no retries that block sampling.** A serial write error drops that frame
//!   (counted in [`NodeStats::write_errors`]); its sequence number is spent, so the gateway
//!   sees and counts the gap. The next frame starts with a `0x00` so the gateway discards the
//!   partial bytes of the failed one instead of gluing them to the next frame. A sensor error
//!   is counted ([`NodeStats::sensor_errors`]) and returned; the node keeps going.
//! - **Blocking writes.** A frame is written with `nb::block!`, so [`Node::flush`] (and the
//!   [`Node::record`] that fills a batch) takes the frame's time on the wire unless the UART
//!   driver buffers: about 8 ms for 8 readings (~90 bytes) at 115 200 baud.
//! - **Generic over embedded-hal 1.0.** Sensors implement [`ReadValue`] (drivers for an I2C
//!   and an SPI part are in [`crate::drivers`]); the serial port is any
//!   `embedded_hal_nb::serial::Write<u8>`; time comes from a [`Clock`] — a hardware timer, or
//!   [`DelayClock`], which counts the milliseconds it waited through an
//!   `embedded_hal::delay::DelayNs`.

use embedded_hal::delay::DelayNs;
use embedded_hal_nb::serial;

use crate::wire::{self, FrameHeader, Quality, WireReading, MAX_READINGS, MIN_FRAME_BYTES};

/// A millisecond clock (wrapping at 2³² ms ≈ 49.7 days; only differences are used).
pub trait Clock {
    fn now_ms(&mut self) -> u32;
}

/// A clock for nodes without a free-running timer: time advances by the delays the node's main
/// loop waits through [`DelayClock::wait_ms`] (sampling time itself is not counted, so keep it
/// small against the period, or use a hardware timer).
pub struct DelayClock<D> {
    delay: D,
    now: u32,
}

impl<D: DelayNs> DelayClock<D> {
    pub fn new(delay: D) -> Self {
        DelayClock { delay, now: 0 }
    }

    /// Blocks for `ms` milliseconds and advances the clock by as much.
    pub fn wait_ms(&mut self, ms: u32) {
        self.delay.delay_ms(ms);
        self.now = self.now.wrapping_add(ms);
    }

    pub fn release(self) -> D {
        self.delay
    }
}

impl<D> Clock for DelayClock<D> {
    fn now_ms(&mut self) -> u32 {
        self.now
    }
}

/// A sensor that produces one value per read (temperature in °C, volts, ...).
pub trait ReadValue {
    type Error;
    fn read_value(&mut self) -> Result<f32, Self::Error>;
}

/// Identity of a node on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConfig {
    /// Unique per serial port (the gateway names entities after it).
    pub node_id: u16,
    /// Must differ from the previous start's: a reset counter kept in flash, or a random value
    /// (RNG peripheral, ADC noise). The gateway uses it to tell a restart (sequence numbers
    /// begin again at 0) from duplicated frames.
    pub boot_id: u16,
}

/// What went wrong in one node call. The node stays usable after every error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeError<W, S = core::convert::Infallible> {
    /// The serial port failed; the frame being sent was dropped.
    Write(W),
    /// The sensor failed; no reading was recorded.
    Sensor(S),
}

/// Counters a node can report (e.g. on a debug console or in a status channel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub frames_sent: u32,
    pub readings_sent: u32,
    pub bytes_sent: u32,
    /// Frames dropped because the serial write failed.
    pub write_errors: u32,
    /// Sensor reads that failed.
    pub sensor_errors: u32,
}

/// A sensor node: records readings with their sample time and sends them in frames.
///
/// `BATCH`: readings per frame (a frame is sent when it is full, or on [`Node::flush`]).
/// `MAX_FRAME`: largest frame on the wire, in bytes, delimiter included.
pub struct Node<W, C, const BATCH: usize, const MAX_FRAME: usize> {
    config: NodeConfig,
    serial: W,
    clock: C,
    pending: heapless::Vec<(u8, u32, f32, Quality), BATCH>,
    seq: u32,
    scratch: [u8; MAX_FRAME],
    wire: [u8; MAX_FRAME],
    resync: bool,
    stats: NodeStats,
}

impl<W, C, const BATCH: usize, const MAX_FRAME: usize> Node<W, C, BATCH, MAX_FRAME>
where
    W: serial::Write<u8>,
    C: Clock,
{
    const CHECK: () = {
        assert!(BATCH >= 1 && BATCH <= MAX_READINGS, "BATCH must be 1..=wire::MAX_READINGS");
        assert!(MAX_FRAME >= MIN_FRAME_BYTES, "MAX_FRAME must be at least wire::MIN_FRAME_BYTES");
    };

    pub fn new(config: NodeConfig, serial: W, clock: C) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        Node {
            config,
            serial,
            clock,
            pending: heapless::Vec::new(),
            seq: 0,
            scratch: [0; MAX_FRAME],
            wire: [0; MAX_FRAME],
            // Start with a delimiter: ends whatever the gateway held before this start.
            resync: true,
            stats: NodeStats::default(),
        }
    }

    /// Records `value` for `channel`, sampled now. Sends a frame when the batch is full.
    pub fn record(&mut self, channel: u8, value: f32, quality: Quality) -> Result<(), NodeError<W::Error>> {
        let now = self.clock.now_ms();
        // Cannot fail: the batch is flushed as soon as it is full, and a flush always empties
        // it (also when the write fails).
        let _ = self.pending.push((channel, now, value, quality));
        if self.pending.is_full() {
            self.flush()?;
        }
        Ok(())
    }

    /// Reads `sensor` and records the value for `channel`.
    pub fn sample<S: ReadValue>(&mut self, channel: u8, sensor: &mut S) -> Result<(), NodeError<W::Error, S::Error>> {
        match sensor.read_value() {
            Ok(v) => self.record(channel, v, Quality::Good).map_err(|e| match e {
                NodeError::Write(w) => NodeError::Write(w),
                NodeError::Sensor(never) => match never {},
            }),
            Err(e) => {
                self.stats.sensor_errors = self.stats.sensor_errors.wrapping_add(1);
                Err(NodeError::Sensor(e))
            }
        }
    }

    /// Sends every pending reading (in as many frames as `MAX_FRAME` requires). On a write
    /// error the frame in flight and the readings not yet sent are dropped.
    pub fn flush(&mut self) -> Result<(), NodeError<W::Error>> {
        let now = self.clock.now_ms();
        let mut readings = [WireReading { channel: 0, ago_ms: 0, value: 0.0, quality: Quality::Good }; BATCH];
        let n = self.pending.len();
        for (slot, &(channel, at, value, quality)) in readings.iter_mut().zip(self.pending.iter()) {
            *slot = WireReading { channel, ago_ms: now.wrapping_sub(at), value, quality };
        }
        self.pending.clear();
        let mut rest = &readings[..n];
        while !rest.is_empty() {
            // The most leading readings that fit one frame (at least one always fits:
            // MAX_FRAME >= MIN_FRAME_BYTES).
            let mut take = rest.len();
            let len = loop {
                let header = FrameHeader { node: self.config.node_id, boot: self.config.boot_id, seq: self.seq };
                match wire::encode_frame(&header, &rest[..take], &mut self.scratch, &mut self.wire) {
                    Ok(len) => break len,
                    Err(wire::TooLarge) if take > 1 => take -= 1,
                    // Unreachable by the compile-time bound; drop the reading rather than loop.
                    Err(wire::TooLarge) => break 0,
                }
            };
            rest = &rest[take..];
            if len == 0 {
                continue;
            }
            self.seq = self.seq.wrapping_add(1);
            if let Err(e) = self.send(len) {
                self.stats.write_errors = self.stats.write_errors.wrapping_add(1);
                self.resync = true;
                return Err(NodeError::Write(e));
            }
            self.stats.frames_sent = self.stats.frames_sent.wrapping_add(1);
            self.stats.readings_sent = self.stats.readings_sent.wrapping_add(take as u32);
            self.stats.bytes_sent = self.stats.bytes_sent.wrapping_add(len as u32);
        }
        Ok(())
    }

    fn send(&mut self, len: usize) -> Result<(), W::Error> {
        if self.resync {
            nb::block!(self.serial.write(0))?;
            self.resync = false;
        }
        for &b in &self.wire[..len] {
            nb::block!(self.serial.write(b))?;
        }
        nb::block!(self.serial.flush())
    }

    /// Readings recorded but not sent yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sequence number of the next frame.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    pub fn clock(&mut self) -> &mut C {
        &mut self.clock
    }

    pub fn serial(&mut self) -> &mut W {
        &mut self.serial
    }

    /// Gives the peripherals back.
    pub fn release(self) -> (W, C) {
        (self.serial, self.clock)
    }
}
