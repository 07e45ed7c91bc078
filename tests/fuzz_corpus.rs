//! The cargo-fuzz targets (`fuzz/`, nightly) on stable, in CI: every input of the checked-in
//! corpora (`fuzz/corpus/<target>/`), mutations of those inputs, and random byte strings go
//! through the same target bodies (`fuzz/src/targets.rs`), which panic on any violated
//! invariant. This is corpus replay plus proptest's random search, not coverage-guided
//! fuzzing; `bash fuzz/run.sh` runs libFuzzer for a bounded time.

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::path::PathBuf;

use proptest::prelude::*;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!inputs.is_empty(), "empty corpus {}", dir.display());
    inputs
}

#[test]
fn frame_decoder_corpus() {
    for input in corpus("frame_decoder") {
        targets::frame_decoder(&input);
    }
}

#[test]
fn payload_decoder_corpus() {
    for input in corpus("payload_decoder") {
        targets::payload_decoder(&input);
    }
}

/// A corpus input with a few bytes overwritten, inserted or removed.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let inputs = corpus(target);
    let n = inputs.len();
    (0..n, prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..8)).prop_map(move |(i, edits)| {
        let mut v = inputs[i].clone();
        for (at, byte, op) in edits {
            let at = usize::from(at) % (v.len() + 1);
            match op {
                0 if at < v.len() => v[at] = byte,
                1 => v.insert(at, byte),
                _ if at < v.len() => {
                    v.remove(at);
                }
                _ => {}
            }
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn frame_decoder_mutations(input in mutated("frame_decoder")) {
        targets::frame_decoder(&input);
    }

    #[test]
    fn frame_decoder_random(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        targets::frame_decoder(&input);
    }

    #[test]
    fn payload_decoder_mutations(input in mutated("payload_decoder")) {
        targets::payload_decoder(&input);
    }

    #[test]
    fn payload_decoder_random(input in prop::collection::vec(any::<u8>(), 0..512)) {
        targets::payload_decoder(&input);
    }
}
