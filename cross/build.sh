#!/usr/bin/env bash
# Build Vigil release binaries (and .deb packages) for ARM gateways and x86_64, on Debian 12.
#
#   bash cross/build.sh aarch64|armv7|x86_64|all ... [--debug] [--no-deb]
#
# For each target:
#   1. cross/setup.sh: Debian cross toolchain, qemu-user-static, rustup target (idempotent);
#   2. cargo build of the `vigil` binary with the release profile (LTO, 1 codegen unit, stripped)
#      - ARM: inference backend `tflite-vendored` (TF Lite 1.15 C++ compiled from the `tflite`
#        crate's vendored sources with the Debian cross g++, linked statically: ~5-12 min per
#        target the first time, once per target and profile);
#      - x86_64: `tflite-c` (tflitec + the prebuilt libtensorflowlite_c.so from
#        cross/tflite/provide-runtime.sh, shipped next to the binary);
#   3. a smoke run of the binary (under qemu-user for ARM): `vigil model-check` on the shipped
#      model, whose golden vectors must match TensorFlow's outputs within tolerance;
#   4. cross/package-deb.sh: target/deb/vigil_<version>_<arch>.deb (skip with --no-deb).
# --debug builds the dev profile instead (faster; CI's choice).
# Prints the binary's size. The linkers and qemu runners are in .cargo/config.toml, so plain
# `cargo build/test/run --target …` works after cross/setup.sh too.
set -euo pipefail
cd "$(dirname "$0")/.."
source cross/targets.sh

profile=release
deb=1
names=()
for a in "$@"; do
  case "$a" in
    --debug) profile=dev ;;
    --no-deb) deb=0 ;;
    all) names+=(x86_64 aarch64 armv7) ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) names+=("$a") ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || { sed -n '2,20p' "$0" >&2; exit 2; }

export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
model=models/univariate-ae/1.1.0

bash cross/setup.sh "${names[@]}"
for name in "${names[@]}"; do
  triple="$(triple_of "$name")"
  echo "==== $triple ($profile) ===="
  [[ "$triple" == x86_64-* ]] && bash cross/tflite/provide-runtime.sh
  t0=$SECONDS
  # shellcheck disable=SC2046 # word splitting of the target arguments is intended
  cargo build -p vigil-agent --bin vigil --profile "$profile" $(cargo_target_args "$triple")
  bin="$(out_dir "$triple" "$profile")/vigil"
  echo "built $bin in $((SECONDS - t0)) s: $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1))"
  # shellcheck disable=SC2046
  $(qemu_of "$triple") "$bin" model-check "$model"
  echo
  if [[ $deb == 1 ]]; then
    bash cross/package-deb.sh "$triple" "$profile"
  fi
done
