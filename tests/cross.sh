#!/usr/bin/env bash
# The ARM checks of the test command (tests/run-all.sh runs this last, in full runs; the x86_64
# debug `vigil` its tests built is the reference). VIGIL_SKIP_CROSS=1 makes run-all.sh skip it.
#   1. cross/setup.sh: Debian cross toolchains, qemu-user-static, rustup targets;
#   2. aarch64: the agent's peer-free tests — its library's unit tests (config, pipeline,
#      windows, inference scoring, commit log, DLQ, replay, NAB scoring, ...) — run under
#      qemu-aarch64 (the runner in .cargo/config.toml). The integration tests are left out:
#      they start peers (Mosquitto, Kafka, S3, Modbus) or spawn the `vigil` binary, which a
#      qemu-user process cannot exec without binfmt_misc;
#   3. aarch64 binary vs x86_64: cross/check-golden.sh (every shipped model's golden windows,
#      and a replay of 3000 rows through the whole pipeline, score the same);
#   4. armv7: build, then the same check-golden run as the smoke test.
#
# Cost: almost all of it is compiling — TF Lite 1.15's C++ (the
# tflite-vendored backend, always -O3 from its own Makefile) and the agent's crates, once per
# target. Kept as small as the checks allow:
#   * debug Rust builds (never LTO), with line tables only: full debug info would make every
#     crate's codegen and the link slower and the binaries 4x larger, and nothing here reads it;
#   * the aarch64 unit tests and the aarch64 `vigil` use the same profile, features and target,
#     so they share every compiled dependency, TF Lite included (one C++ build per target);
#   * TF Lite's make runs with cargo's job count (NUM_JOBS: all cores unless CARGO_BUILD_JOBS
#     says otherwise); TFLITE_RS_MAKE_PARALLELISM overrides it;
#   * the x86_64 reference is the binary the tests already built (built here only if missing
#     or older than the sources).
# Prints each step's wall time and CPU time (user+sys of everything it ran). Measured in a fresh
# clone (bash .ci/run) on the shared 2-core machine while two other builds ran, wall / CPU s:
#   aarch64 build (dependencies, TF Lite C++ 343 s of it, unit tests) 481 / 572; unit tests
#   under qemu (118) 5 / 5; aarch64 vigil 93 / 71; golden 4 / 3; armv7 build 363 / 499; smoke
#   3 / 3; total 949 / 1156 (on 2 idle cores ~10-11 min: CPU / 2 plus the serial tail).
#   Warm target/: about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s ====\n' "$*"; }
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
feat=(--no-default-features --features tflite-vendored)
aarch64=aarch64-unknown-linux-gnu
armv7=armv7-unknown-linux-gnueabihf
reference=target/debug/vigil
rc=0

# cpu_ticks: CPU time (user+sys, clock ticks) used so far by this script's finished children:
# fields 16-17 (cutime, cstime) of /proc/PID/stat. ($$ is this script even in a subshell; bash's
# `times` is not: in $(...) it would count the subshell's own children.)
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }
t=$SECONDS c=$(cpu_ticks) t_start=$SECONDS c_start=$c
lap() {
  local c_now; c_now=$(cpu_ticks)
  echo "---- $1: $((SECONDS - t)) s wall, $(((c_now - c) / tck)) s CPU"
  t=$SECONDS c=$c_now
}

# Debug info of the ARM code: line tables only (backtraces keep file:line). Passed as target
# rustflags (appended after cargo's -C debuginfo=2, merged with .cargo/config.toml's), not as a
# profile setting: a profile change would also reach the host's build scripts and proc macros
# and rebuild them instead of reusing the x86_64 build's.
arm_cargo() {
  local cmd="$1" triple="$2"; shift 2
  cargo "$cmd" --target "$triple" --config "target.$triple.rustflags=[\"-C\", \"debuginfo=line-tables-only\"]" \
    -p vigil-agent "${feat[@]}" "$@"
}

step "cross: setup (cross/setup.sh aarch64 armv7)"
bash cross/setup.sh aarch64 armv7
# The reference: the binary the x86_64 tests just built; (re)built when missing or older than a
# source (e.g. `bash tests/cross.sh` alone after an edit) — never compare against a stale build.
if [[ ! -x "$reference" ]] || [[ -n "$(find agent/src agent/Cargo.toml cloud-uplink/src \
    cloud-uplink/Cargo.toml firmware-bridge/src firmware-bridge/Cargo.toml Cargo.toml Cargo.lock \
    -newer "$reference" -type f -print -quit)" ]]; then
  cargo build -p vigil-agent --bin vigil
fi
lap setup

step "cross: aarch64 unit tests of vigil-agent under qemu-aarch64"
arm_cargo test "$aarch64" --lib --no-run || rc=1
lap "aarch64 build (dependencies, TF Lite C++, unit tests)"
arm_cargo test "$aarch64" --lib || rc=1
lap "aarch64 unit tests under qemu"

# golden TRIPLE: build the target's `vigil` and check it scores like the x86_64 reference.
golden() {
  arm_cargo build "$1" --bin vigil || return 1
  lap "$1 vigil build"
  bash cross/check-golden.sh "$reference" "target/$1/debug/vigil"
}

step "cross: aarch64 vigil scores like x86_64 (cross/check-golden.sh)"
golden "$aarch64" || rc=1
lap "aarch64 golden check under qemu"

step "cross: armv7 build and smoke run under qemu-arm (cross/check-golden.sh)"
golden "$armv7" || rc=1
lap "armv7 smoke (golden check) under qemu"
t=$t_start c=$c_start
lap "tests/cross.sh total"
exit "$rc"
