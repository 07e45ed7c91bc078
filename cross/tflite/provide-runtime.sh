#!/usr/bin/env bash
# Provide the TensorFlow Lite C library that tflitec links against.
#
# Usage: cross/tflite/provide-runtime.sh [TARGET]     (default: x86_64-unknown-linux-gnu)
#
# Idempotent. For x86_64-unknown-linux-gnu it extracts the real TF Lite 2.6.0
# libtensorflowlite_c.so that the tflitec 0.7.0 crate package ships in
# build-res/docsrs_res.zip into target/tflite/<TARGET>/, which is where
# .cargo/config.toml points TFLITEC_PREBUILT_PATH_X86_64_UNKNOWN_LINUX_GNU.
# The C API headers tflitec's bindgen step needs are ours, in cross/tflite/include
# (TFLITEC_HEADER_DIR).
#
# Debian packages needed: unzip (this script), libclang-dev (tflitec's bindgen).
# They are installed with apt-get when missing and the script runs as root;
# otherwise the script says what to install.
#
# Note: `cargo clean` deletes target/tflite; run this script again afterwards.
set -euo pipefail

TARGET="${1:-x86_64-unknown-linux-gnu}"
TFLITEC_VERSION="0.7.0"
EXPECTED_TFLITE_VERSION="2.6.0"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST_DIR="$REPO_ROOT/target/tflite/$TARGET"
DEST_LIB="$DEST_DIR/libtensorflowlite_c.so"

log() { printf 'provide-runtime: %s\n' "$*" >&2; }
die() { printf 'provide-runtime: error: %s\n' "$*" >&2; exit 1; }

case "$TARGET" in
  x86_64-unknown-linux-gnu) ;;
  *)
    die "no TensorFlow Lite C library is available for target '$TARGET'.
  The only prebuilt library at hand (inside the tflitec $TFLITEC_VERSION crate) is for
  x86_64 Linux. Supply a libtensorflowlite_c.so built for '$TARGET' yourself and point
  cargo at it, e.g.
    export TFLITEC_PREBUILT_PATH_$(printf '%s' "$TARGET" | tr 'a-z-' 'A-Z_')=/path/to/libtensorflowlite_c.so
  (TFLITEC_HEADER_DIR from .cargo/config.toml applies to every target).
  ARM targets are tracked separately (issue 8)."
    ;;
esac

# --- host tools ---------------------------------------------------------------
need_pkgs=()
command -v unzip >/dev/null 2>&1 || need_pkgs+=(unzip)
# bindgen loads libclang.so at build time.
have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  local f
  for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang*.so* /usr/lib/libclang*.so*; do
    [ -e "$f" ] && return 0
  done
  return 1
}
have_libclang || need_pkgs+=(libclang-dev)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${need_pkgs[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" \
      || { apt-get update && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y --no-install-recommends "${need_pkgs[@]}"; }
  else
    die "missing Debian packages: ${need_pkgs[*]} (run: sudo apt-get install ${need_pkgs[*]})"
  fi
fi

# --- already provided? ----------------------------------------------------------
# Host binaries carry RUNPATH $ORIGIN: put the library next to cargo's debug and release
# binaries too, so `target/*/vigil` runs directly (not only through `cargo run`).
link_next_to_binaries() {
  local profile
  for profile in debug release; do
    mkdir -p "$REPO_ROOT/target/$profile"
    ln -sf "../tflite/$TARGET/libtensorflowlite_c.so" "$REPO_ROOT/target/$profile/libtensorflowlite_c.so"
  done
}

if [ -f "$DEST_LIB" ] && [ -f "$DEST_DIR/.source" ]; then
  link_next_to_binaries
  log "already present: $DEST_LIB"
  exit 0
fi

# --- locate the tflitec crate source ---------------------------------------------
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
find_crate() {
  local d
  for d in "$CARGO_HOME_DIR"/registry/src/*/tflitec-"$TFLITEC_VERSION"; do
    if [ -f "$d/build-res/docsrs_res.zip" ]; then
      printf '%s\n' "$d"
      return 0
    fi
  done
  return 1
}

CRATE_DIR="$(find_crate || true)"
if [ -z "$CRATE_DIR" ]; then
  log "tflitec $TFLITEC_VERSION not in $CARGO_HOME_DIR/registry/src; running cargo fetch"
  (cd "$REPO_ROOT" && cargo fetch)
  CRATE_DIR="$(find_crate || true)"
  [ -n "$CRATE_DIR" ] || die "tflitec $TFLITEC_VERSION still not found under $CARGO_HOME_DIR/registry/src after cargo fetch (is it still the version in Cargo.lock?)"
fi
ZIP="$CRATE_DIR/build-res/docsrs_res.zip"
log "using $ZIP"

# --- extract ---------------------------------------------------------------------
mkdir -p "$DEST_DIR"
TMP="$(mktemp -d "$DEST_DIR/.extract.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
unzip -q -o "$ZIP" libtensorflowlite_c.so -d "$TMP"
[ -f "$TMP/libtensorflowlite_c.so" ] || die "libtensorflowlite_c.so not found in $ZIP"

# Sanity: right architecture, and the C API entry points are exported.
if command -v od >/dev/null 2>&1; then
  # ELF e_machine at offset 18: 0x3e = x86-64.
  machine="$(od -An -tx1 -j18 -N2 "$TMP/libtensorflowlite_c.so" | tr -d ' \n')"
  [ "$machine" = "3e00" ] || die "extracted library is not x86_64 (e_machine=$machine)"
fi
if ! grep -aq "TfLiteInterpreterCreate" "$TMP/libtensorflowlite_c.so"; then
  die "extracted library does not export the TF Lite C API"
fi

chmod 0755 "$TMP/libtensorflowlite_c.so"
mv -f "$TMP/libtensorflowlite_c.so" "$DEST_LIB"
printf 'TensorFlow Lite %s C library from %s\n' "$EXPECTED_TFLITE_VERSION" "$ZIP" > "$DEST_DIR/.source"
link_next_to_binaries
log "provided $DEST_LIB (TensorFlow Lite $EXPECTED_TFLITE_VERSION)"
log "release binaries have RUNPATH \$ORIGIN: ship this .so next to the binary"
