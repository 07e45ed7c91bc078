#!/usr/bin/env bash
# Fuzzes the serial frame decoder and the agent's payload decoders with libFuzzer for a bounded
# time (cargo-fuzz, nightly toolchain). Not part of CI: CI replays the corpora and random inputs
# through the same target bodies on stable (`tests/fuzz_corpus.rs`).
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 60 s, every target)
#
# Needs: the nightly toolchain (`rustup toolchain install nightly`), cargo-fuzz (installed here
# with `cargo install cargo-fuzz --locked` when missing), the TF Lite runtime
# (`bash cross/tflite/provide-runtime.sh`: the payload target links the agent).
# New inputs libFuzzer finds go to fuzz/corpus/<target>/ (commit the interesting ones);
# a crash is saved under fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(frame_decoder payload_decoder)

cargo +nightly --version >/dev/null
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
bash cross/tflite/provide-runtime.sh >/dev/null
# cargo-fuzz sets its own RUSTFLAGS (the $ORIGIN rpath of .cargo/config.toml does not apply).
export LD_LIBRARY_PATH="$PWD/target/tflite/x86_64-unknown-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

for t in "${targets[@]}"; do
  echo "==== fuzzing $t for ${seconds} s ===="
  # -s none: no sanitizer (the code under test is safe Rust; panics and aborts are the findings).
  cargo +nightly fuzz run -s none --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
