#!/usr/bin/env bash
# CI's ARM checks (tests/run-all.sh runs this after the x86_64 tests; the x86_64 debug `vigil`
# they built is the reference). Debug builds: CI never pays for LTO; TF Lite's C++ (the
# tflite-vendored backend) is compiled once per target.
#   1. cross/setup.sh: Debian cross toolchains, qemu-user-static, rustup targets;
#   2. aarch64: the agent's peer-free tests — its library's unit tests (config, pipeline,
#      windows, inference scoring, commit log, DLQ, replay, NAB scoring, ...) — run under
#      qemu-aarch64 (the runner in .cargo/config.toml). The integration tests are left out:
#      they start peers (Mosquitto, Kafka, S3, Modbus) or spawn the `vigil` binary, which a
#      qemu-user process cannot exec without binfmt_misc;
#   3. aarch64 binary vs x86_64: cross/check-golden.sh (every shipped model's golden windows,
#      and a replay of 3000 rows through the whole pipeline, score the same);
#   4. armv7: build, then the same check-golden run as the smoke test.
# Prints each step's time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s ====\n' "$*"; }
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
feat=(--no-default-features --features tflite-vendored)
aarch64=aarch64-unknown-linux-gnu
armv7=armv7-unknown-linux-gnueabihf
reference=target/debug/vigil
rc=0
t=$SECONDS
lap() { echo "---- $1: $((SECONDS - t)) s"; t=$SECONDS; }

step "cross: setup (cross/setup.sh aarch64 armv7)"
bash cross/setup.sh aarch64 armv7
[[ -x "$reference" ]] || cargo build -p vigil-agent --bin vigil
lap setup

step "cross: aarch64 unit tests of vigil-agent under qemu-aarch64"
cargo test -p vigil-agent --lib --target "$aarch64" "${feat[@]}" || rc=1
lap "aarch64 build + unit tests"

# golden TRIPLE: build the target's `vigil` and check it scores like the x86_64 reference.
golden() {
  cargo build -p vigil-agent --bin vigil --target "$1" "${feat[@]}" \
    && bash cross/check-golden.sh "$reference" "target/$1/debug/vigil"
}

step "cross: aarch64 vigil scores like x86_64 (cross/check-golden.sh)"
golden "$aarch64" || rc=1
lap "aarch64 binary + golden"

step "cross: armv7 build and smoke run under qemu-arm (cross/check-golden.sh)"
golden "$armv7" || rc=1
lap "armv7 build + smoke"
exit "$rc"
