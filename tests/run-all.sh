#!/usr/bin/env bash
# THE test command of Vigil (CI runs it through .ci/run):
#   1. install the real peers the tests start (tests/peers/install.sh; quick when warm),
#   2. provide the TFLite runtime (cross/tflite/provide-runtime.sh, when present),
#   3. build the firmware-bridge node library for a bare-metal target (thumbv7em-none-eabihf,
#      no std, no allocator; `rustup target add` when missing),
#   4. run every test of the workspace: cargo nextest when installed, else cargo test,
#   5. (full runs as root only) package the debug binary as the x86_64 .deb, install it with
#      dpkg -i and start the agent as its systemd unit would (tests/deb_install.sh),
#   6. (full runs only) the ARM checks under qemu-user (tests/cross.sh): debug builds for
#      aarch64 and armv7 (TF Lite 1.15 C++ compiled from source once per target), the agent's
#      unit tests under qemu-aarch64, and both ARM binaries scoring every model's golden windows
#      and a 3000-row replay like the x86_64 build. This is most of the command's cost the first
#      time: 19 CPU-minutes (fresh clone on 2 idle cores: 641 s wall, the whole .ci/run 16.5 min;
#      949 s / 24 min on a loaded machine); ~1 min when target/ is warm.
#      VIGIL_SKIP_CROSS=1 skips it (e.g. `VIGIL_SKIP_CROSS=1 bash tests/run-all.sh` while
#      iterating on x86_64); then run `bash tests/cross.sh` alone before landing ARM-relevant work.
# The exit code is the tests' result. Extra arguments go to the test runner,
# e.g. `bash tests/run-all.sh -p vigil-test-harness`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s ====\n' "$*"; }
t0=$SECONDS

step "peers: tests/peers/install.sh"
bash tests/peers/install.sh

if [[ -f cross/tflite/provide-runtime.sh ]]; then
  step "tflite runtime: cross/tflite/provide-runtime.sh"
  bash cross/tflite/provide-runtime.sh
else
  step "tflite runtime: cross/tflite/provide-runtime.sh not present, skipped"
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# 2 cores shared by everything: keep the build from starving the peers the tests start.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# One-shot builds gain nothing from incremental compilation; it only costs disk (GBs) and time.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

rc=0
step "firmware-bridge: no_std build for thumbv7em-none-eabihf"
if ! rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf; then
  rustup target add thumbv7em-none-eabihf || rc=$?
fi
cargo build -p firmware-bridge --target thumbv7em-none-eabihf --no-default-features || rc=$?

args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--workspace)

if cargo nextest --version >/dev/null 2>&1 && [[ "${VIGIL_NO_NEXTEST:-}" != 1 ]]; then
  # nextest does not run doctests: run them first, so nextest's summary closes the output.
  step "cargo test ${args[*]} --doc"
  cargo test "${args[@]}" --doc --no-fail-fast || rc=$?
  step "cargo nextest run ${args[*]} --all-targets"
  cargo nextest run "${args[@]}" --all-targets --no-fail-fast --failure-output final || rc=$?
else
  step "cargo test ${args[*]} --all-targets"
  cargo test "${args[@]}" --all-targets --no-fail-fast || rc=$?
fi

# Packaging and the ARM checks: only in a full run (no runner arguments).
if [[ ${#@} -eq 0 ]]; then
  step "x86_64 .deb: tests/deb_install.sh"
  if [[ "$(id -u)" -eq 0 ]]; then
    bash tests/deb_install.sh dev || rc=$?
  else
    echo "skipped: dpkg -i needs root"
  fi
  if [[ "${VIGIL_SKIP_CROSS:-}" == 1 ]]; then
    step "ARM checks: skipped (VIGIL_SKIP_CROSS=1)"
  else
    step "ARM checks under qemu-user: tests/cross.sh"
    bash tests/cross.sh || rc=$?
  fi
fi

if [[ $rc -eq 0 ]]; then
  step "ALL TESTS PASSED ($((SECONDS - t0)) s)"
else
  step "TESTS FAILED (exit $rc, $((SECONDS - t0)) s)"
fi
exit "$rc"
