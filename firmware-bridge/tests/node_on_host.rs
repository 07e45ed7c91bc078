//! The node side running on the host against embedded-hal-mock peripherals (I2C, SPI, serial,
//! delay): drivers issue the exact bus transactions of the real parts, the node writes the
//! exact frame bytes, and write/sensor errors are handled without panicking.

use std::cell::Cell;
use std::rc::Rc;

use embedded_hal_mock::eh1::delay::{CheckedDelay, Transaction as DelayTx};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTx};
use embedded_hal_mock::eh1::serial::{Mock as SerialMock, Transaction as SerialTx};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as SpiTx};
use embedded_hal::i2c::ErrorKind;
use embedded_hal_nb::nb;
use embedded_hal_nb::serial::ErrorKind as SerialErrorKind;
use firmware_bridge::drivers::{Mcp3008, Tmp102};
use firmware_bridge::gateway::{FrameDecoder, Sequence, SequenceTracker};
use firmware_bridge::host::StdSerial;
use firmware_bridge::node::{Clock, DelayClock, Node, NodeConfig, NodeError, ReadValue};
use firmware_bridge::wire::{encode_frame, FrameHeader, Quality, WireReading};

/// A clock the test sets.
#[derive(Clone, Default)]
struct TestClock(Rc<Cell<u32>>);

impl Clock for TestClock {
    fn now_ms(&mut self) -> u32 {
        self.0.get()
    }
}

/// A serial port that keeps what was written.
type Capture = StdSerial<Vec<u8>>;

fn wire(header: FrameHeader, readings: &[WireReading]) -> Vec<u8> {
    let (mut scratch, mut out) = ([0u8; 256], [0u8; 256]);
    let n = encode_frame(&header, readings, &mut scratch, &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn tmp102_reads_the_temperature_register() {
    let mut i2c = I2cMock::new(&[
        I2cTx::write_read(0x48, vec![0x00], vec![0x19, 0x00]),
        I2cTx::write_read(0x48, vec![0x00], vec![0xE7, 0x00]),
        I2cTx::write_read(0x48, vec![0x00], vec![0x7F, 0xF0]),
    ]);
    let mut t = Tmp102::new(i2c.clone(), 0x48);
    assert_eq!(t.read_value().unwrap(), 25.0);
    assert_eq!(t.read_value().unwrap(), -25.0);
    assert_eq!(t.read_value().unwrap(), 127.9375);
    i2c.done();
}

#[test]
fn mcp3008_converts_one_channel() {
    let mut spi = SpiMock::new(&[
        SpiTx::transaction_start(),
        SpiTx::transfer(vec![0x01, 0x80 | (5 << 4), 0x00], vec![0x00, 0x02, 0xFF]),
        SpiTx::transaction_end(),
    ]);
    let mut adc = Mcp3008::new(spi.clone(), 5, 3.3);
    let v = adc.read_value().unwrap();
    assert!((v - 767.0 * 3.3 / 1023.0).abs() < 1e-6, "{v}");
    spi.done();
}

#[test]
fn node_writes_exact_frames_with_sample_ages() {
    let clock = TestClock::default();
    let mut i2c = I2cMock::new(&[
        I2cTx::write_read(0x48, vec![0x00], vec![0x15, 0x80]), // 21.5 °C
        I2cTx::write_read(0x48, vec![0x00], vec![0x15, 0xC0]), // 21.75 °C
    ]);
    let mut sensor = Tmp102::new(i2c.clone(), 0x48);
    let header = FrameHeader { node: 12, boot: 3, seq: 0 };
    let readings = [
        WireReading { channel: 0, ago_ms: 1500, value: 21.5, quality: Quality::Good },
        WireReading { channel: 0, ago_ms: 500, value: 21.75, quality: Quality::Good },
        WireReading { channel: 7, ago_ms: 0, value: -1.0, quality: Quality::Bad },
    ];
    let mut expected = vec![0u8]; // a node's first frame starts with a delimiter
    expected.extend(wire(header, &readings));
    let mut serial = SerialMock::new(&[SerialTx::write_many(expected), SerialTx::flush()]);

    let mut node: Node<_, _, 3, 64> = Node::new(NodeConfig { node_id: 12, boot_id: 3 }, serial.clone(), clock.clone());
    clock.0.set(1000);
    node.sample(0, &mut sensor).unwrap();
    clock.0.set(2000);
    node.sample(0, &mut sensor).unwrap();
    assert_eq!(node.pending(), 2);
    clock.0.set(2500);
    node.record(7, -1.0, Quality::Bad).unwrap(); // the batch is full: sent now
    assert_eq!(node.pending(), 0);
    assert_eq!(node.next_seq(), 1);
    let s = node.stats();
    assert_eq!((s.frames_sent, s.readings_sent, s.write_errors), (1, 3, 0));
    serial.done();
    i2c.done();
}

#[test]
fn a_write_error_drops_one_frame_and_the_gateway_sees_the_gap() {
    let clock = TestClock::default();
    let r = |value| [WireReading { channel: 1, ago_ms: 0, value, quality: Quality::Good }];
    let first = wire(FrameHeader { node: 2, boot: 9, seq: 0 }, &r(1.0));
    let second = wire(FrameHeader { node: 2, boot: 9, seq: 1 }, &r(2.0));
    let third = wire(FrameHeader { node: 2, boot: 9, seq: 2 }, &r(3.0));
    let mut sent = vec![0u8];
    sent.extend(&first);
    // The second frame fails after 3 bytes; the third starts with a delimiter.
    sent.extend(&second[..3]);
    sent.push(0);
    sent.extend(&third);
    let mut serial = SerialMock::new(&[
        SerialTx::write_many({
            let mut v = vec![0u8];
            v.extend(&first);
            v
        }),
        SerialTx::flush(),
        SerialTx::write_many(&second[..3]),
        SerialTx::write_error(second[3], nb::Error::Other(SerialErrorKind::Overrun)),
        SerialTx::write_many({
            let mut v = vec![0u8];
            v.extend(&third);
            v
        }),
        SerialTx::flush(),
    ]);
    let mut node: Node<_, _, 1, 64> = Node::new(NodeConfig { node_id: 2, boot_id: 9 }, serial.clone(), clock);
    node.record(1, 1.0, Quality::Good).unwrap();
    assert_eq!(node.record(1, 2.0, Quality::Good), Err(NodeError::Write(SerialErrorKind::Overrun)));
    node.record(1, 3.0, Quality::Good).unwrap();
    let s = node.stats();
    assert_eq!((s.frames_sent, s.write_errors), (2, 1));
    serial.done();

    let mut decoder = FrameDecoder::new(64);
    let mut tracker = SequenceTracker::default();
    let mut verdicts = Vec::new();
    let mut bad = 0;
    decoder.push(&sent, |_, f| match f {
        Ok(f) => verdicts.push((tracker.observe(&f.header, f.readings.len()), f.readings[0].value)),
        Err(_) => bad += 1,
    });
    assert_eq!(bad, 1, "the partial frame is rejected on its own");
    assert_eq!(verdicts, vec![(Sequence::First, 1.0), (Sequence::Gap { missing: 1 }, 3.0)]);
    assert_eq!(tracker.counts(2).unwrap().missing_frames, 1);
}

#[test]
fn a_sensor_error_is_counted_and_records_nothing() {
    let mut i2c = I2cMock::new(&[I2cTx::write_read(0x49, vec![0x00], vec![0, 0]).with_error(ErrorKind::Other)]);
    let mut sensor = Tmp102::new(i2c.clone(), 0x49);
    let mut node: Node<_, _, 4, 64> = Node::new(NodeConfig { node_id: 1, boot_id: 1 }, Capture::default(), TestClock::default());
    assert!(matches!(node.sample(0, &mut sensor), Err(NodeError::Sensor(ErrorKind::Other))));
    assert_eq!((node.pending(), node.stats().sensor_errors), (0, 1));
    i2c.done();
}

#[test]
fn frames_never_exceed_max_frame_and_split_in_order() {
    const MAX: usize = 48;
    let mut node: Node<_, _, 23, MAX> = Node::new(NodeConfig { node_id: 300, boot_id: 1 }, Capture::default(), TestClock::default());
    let values: Vec<f32> = (0..23).map(|i| 0.1 * i as f32).collect();
    for (i, v) in values.iter().enumerate() {
        node.record(i as u8 * 11, *v, Quality::Good).unwrap();
    }
    assert_eq!(node.pending(), 0);
    let (capture, _) = node.release();
    let bytes = &capture.get_ref()[1..]; // leading delimiter
    let frames: Vec<&[u8]> = bytes.split_inclusive(|&b| b == 0).collect();
    assert!(frames.len() > 1, "23 readings do not fit one {MAX}-byte frame");
    assert!(frames.iter().all(|f| f.len() <= MAX), "{:?}", frames.iter().map(|f| f.len()).collect::<Vec<_>>());
    let mut decoder = FrameDecoder::new(MAX);
    let mut got = Vec::new();
    decoder.push(bytes, |_, f| got.extend(f.unwrap().readings.iter().map(|r| (r.channel, r.value as f32))));
    let want: Vec<(u8, f32)> = values.iter().enumerate().map(|(i, v)| (i as u8 * 11, *v)).collect();
    assert_eq!(got, want);
}

#[test]
fn delay_clock_counts_the_delays() {
    let mut delay = CheckedDelay::new(&[DelayTx::blocking_delay_ms(250), DelayTx::blocking_delay_ms(750)]);
    let mut clock = DelayClock::new(delay.clone());
    clock.wait_ms(250);
    assert_eq!(clock.now_ms(), 250);
    clock.wait_ms(750);
    assert_eq!(clock.now_ms(), 1000);
    delay.done();
}
