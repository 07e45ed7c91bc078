//! Property tests of the link: COBS round trips; the decoder never panics on any byte stream;
//! arbitrary corruption of a valid stream loses only the frames it touched (and never yields a
//! frame that was not sent); node → gateway round trips keep every reading and the frame size
//! bound; sequence tracking counts exactly the frames dropped and duplicated.

use firmware_bridge::cobs;
use firmware_bridge::gateway::{decode_frame, Frame, FrameDecoder, SequenceTracker};
use firmware_bridge::host::StdSerial;
use firmware_bridge::node::{Clock, Node, NodeConfig};
use firmware_bridge::wire::{encode_frame, FrameHeader, Quality, WireReading, MAX_READINGS};
use proptest::prelude::*;

// Above the largest frame `frame_spec` produces (23 readings of at most 15 bytes, header, CRC).
const MAX: usize = 512;

fn reading() -> impl Strategy<Value = WireReading> {
    (any::<u8>(), any::<u32>(), any::<f32>(), 0u8..3).prop_map(|(channel, ago_ms, value, q)| WireReading {
        channel,
        ago_ms,
        value,
        quality: Quality::from_code(q.into()).unwrap(),
    })
}

fn frame_spec() -> impl Strategy<Value = (FrameHeader, Vec<WireReading>)> {
    (any::<u16>(), any::<u16>(), any::<u32>(), prop::collection::vec(reading(), 1..=MAX_READINGS))
        .prop_map(|(node, boot, seq, r)| (FrameHeader { node, boot, seq }, r))
}

fn wire(h: &FrameHeader, r: &[WireReading]) -> Vec<u8> {
    let (mut scratch, mut out) = ([0u8; 1024], [0u8; 1024]);
    let n = encode_frame(h, r, &mut scratch, &mut out).unwrap();
    out[..n].to_vec()
}

fn same(a: &Frame, h: &FrameHeader, r: &[WireReading]) -> bool {
    a.header == *h
        && a.readings.len() == r.len()
        && a.readings.iter().zip(r).all(|(x, y)| {
            x.channel == y.channel && x.ago_ms == y.ago_ms && x.quality == y.quality && (x.value as f32).to_bits() == y.value.to_bits()
        })
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, m)| Damage::Flip(i, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<usize>().prop_map(Damage::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cobs_round_trips(data in prop::collection::vec(any::<u8>(), 0..1200)) {
        let mut enc = vec![0u8; cobs::max_encoded_len(data.len())];
        let n = cobs::encode(&data, &mut enc).unwrap();
        prop_assert!(!enc[..n].contains(&0));
        let mut dec = vec![0u8; data.len()];
        let m = cobs::decode(&enc[..n], &mut dec).unwrap();
        prop_assert_eq!(&dec[..m], &data[..]);
    }

    #[test]
    fn decoder_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8), max in 1usize..600) {
        let mut d = FrameDecoder::new(max);
        let mut n = 0;
        let total_zeros: usize = chunks.iter().map(|c| c.iter().filter(|&&b| b == 0).count()).sum();
        for c in &chunks {
            d.push(c, |_, _| n += 1);
        }
        // At most one result per delimiter.
        prop_assert!(n <= total_zeros);
        prop_assert!(d.buffered() <= chunks.iter().map(Vec::len).sum::<usize>());
        let _ = decode_frame(&chunks.concat());
    }

    #[test]
    fn corruption_loses_only_damaged_frames(
        frames in prop::collection::vec(frame_spec(), 1..12),
        damages in prop::collection::vec(damage(), 0..6),
    ) {
        // The stream and each frame's byte range (delimiter included).
        let mut stream = Vec::new();
        let mut spans = Vec::new();
        for (h, r) in &frames {
            let start = stream.len();
            stream.extend(wire(h, r));
            spans.push(start..stream.len());
        }
        // Apply damage at positions in the original stream, last position first so earlier
        // positions stay valid; a frame is damaged if a change falls in it or in the delimiter
        // just before it (which joins it to its predecessor).
        let mut touched = vec![false; frames.len()];
        let mut positions: Vec<(usize, Damage)> = damages.iter().map(|d| match d {
            Damage::Flip(i, _) | Damage::Insert(i, _) | Damage::Delete(i) => (i % stream.len(), d.clone()),
        }).collect();
        positions.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
        for (p, d) in &positions {
            for (k, s) in spans.iter().enumerate() {
                if s.contains(p) || (k > 0 && *p + 1 == s.start) {
                    touched[k] = true;
                }
            }
            match d {
                Damage::Flip(_, m) => stream[*p] ^= m,
                Damage::Insert(_, b) => stream.insert(*p, *b),
                Damage::Delete(_) => { stream.remove(*p); }
            }
        }
        let mut d = FrameDecoder::new(MAX);
        let mut good = Vec::new();
        d.push(&stream, |_, f| if let Ok(f) = f { good.push(f) });
        // Every undamaged frame arrives, in order, exactly as sent.
        let mut it = good.iter();
        for (k, (h, r)) in frames.iter().enumerate() {
            if !touched[k] {
                prop_assert!(it.any(|f| same(f, h, r)), "undamaged frame {} lost", k);
            }
        }
        // Nothing arrives that was not sent.
        for f in &good {
            prop_assert!(frames.iter().any(|(h, r)| same(f, h, r)), "decoded a frame never sent: {:?}", f);
        }
    }

    #[test]
    fn node_to_gateway_round_trip(values in prop::collection::vec((any::<u8>(), any::<f32>(), 0u32..100_000), 1..80)) {
        struct Stepper(u32);
        impl Clock for Stepper {
            fn now_ms(&mut self) -> u32 { self.0 }
        }
        const FRAME: usize = 64;
        let mut node: Node<_, _, 8, FRAME> = Node::new(NodeConfig { node_id: 1, boot_id: 1 }, StdSerial::new(Vec::new()), Stepper(0));
        for &(ch, v, step) in &values {
            node.clock().0 = node.clock().0.wrapping_add(step);
            node.record(ch, v, Quality::Good).unwrap();
        }
        node.flush().unwrap();
        let frames_sent = node.stats().frames_sent;
        let (capture, _) = node.release();
        let mut d = FrameDecoder::new(FRAME);
        let mut tracker = SequenceTracker::default();
        let mut got = Vec::new();
        let mut n = 0;
        d.push(capture.get_ref(), |_, f| {
            let f = f.expect("node frames decode");
            assert!(f.wire_len <= FRAME);
            assert!(tracker.observe(&f.header, f.readings.len()).is_new());
            n += 1;
            got.extend(f.readings.iter().map(|r| (r.channel, (r.value as f32).to_bits())));
        });
        prop_assert_eq!(n, frames_sent);
        let want: Vec<(u8, u32)> = values.iter().map(|&(c, v, _)| (c, v.to_bits())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(tracker.counts(1).unwrap().missing_frames, 0);
    }

    #[test]
    fn tracker_counts_drops_and_duplicates(events in prop::collection::vec(0u8..10, 1..200)) {
        // 0: the frame is lost, 1: delivered twice, else delivered once.
        let mut t = SequenceTracker::default();
        let (mut lost, mut dup, mut delivered, mut seen_first) = (0u64, 0u64, 0u64, false);
        for (seq, e) in events.iter().enumerate() {
            let h = FrameHeader { node: 4, boot: 7, seq: seq as u32 };
            if *e == 0 {
                if seen_first { lost += 1; }
                continue;
            }
            // A loss before the first frame seen cannot be known.
            seen_first = true;
            delivered += 1;
            t.observe(&h, 1);
            if *e == 1 {
                dup += 1;
                t.observe(&h, 1);
            }
        }
        if delivered > 0 {
            // Trailing losses are only visible once a later frame arrives.
            let trailing = events.iter().rev().take_while(|&&e| e == 0).count() as u64;
            let c = t.counts(4).unwrap();
            prop_assert_eq!(c.frames, delivered);
            prop_assert_eq!(c.duplicate_frames, dup);
            prop_assert_eq!(c.missing_frames, lost - trailing);
        }
    }
}
