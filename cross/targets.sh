# Sourced by the cross/ scripts: short target names -> Rust triples, Debian packages, qemu.
# shellcheck shell=bash

# triple_of NAME: aarch64 | armv7 | x86_64 (or a full triple) -> Rust target triple.
triple_of() {
  case "$1" in
    aarch64|arm64|aarch64-unknown-linux-gnu) echo aarch64-unknown-linux-gnu ;;
    armv7|armhf|armv7-unknown-linux-gnueabihf) echo armv7-unknown-linux-gnueabihf ;;
    x86_64|amd64|x86_64-unknown-linux-gnu) echo x86_64-unknown-linux-gnu ;;
    *) echo "unknown target '$1' (aarch64, armv7 or x86_64)" >&2; return 1 ;;
  esac
}

# deb_arch_of TRIPLE -> Debian architecture.
deb_arch_of() {
  case "$1" in
    aarch64-*) echo arm64 ;;
    armv7-*) echo armhf ;;
    x86_64-*) echo amd64 ;;
  esac
}

# qemu_of TRIPLE -> the qemu-user command that runs the target's binaries here (empty: native).
qemu_of() {
  case "$1" in
    aarch64-*) echo "qemu-aarch64-static -L /usr/aarch64-linux-gnu" ;;
    armv7-*) echo "qemu-arm-static -L /usr/arm-linux-gnueabihf" ;;
    *) echo "" ;;
  esac
}

# cargo_target_args TRIPLE -> the cargo arguments that select the target and its inference
# backend: ARM builds link TF Lite 1.15 C++ built from the `tflite` crate's vendored sources
# (feature tflite-vendored); x86_64 links the prebuilt libtensorflowlite_c.so through tflitec.
# VIGIL_TFLITE_BACKEND=tflite-c makes an ARM build use tflitec too, with the user's own
# libtensorflowlite_c.so in TFLITEC_PREBUILT_PATH_<TRIPLE> (see cross/README.md).
cargo_target_args() {
  case "$1" in
    x86_64-*) echo "" ;;
    *)
      if [[ "${VIGIL_TFLITE_BACKEND:-tflite-vendored}" == tflite-c ]]; then
        echo "--target $1"
      else
        echo "--target $1 --no-default-features --features tflite-vendored"
      fi
      ;;
  esac
}

# out_dir TRIPLE PROFILE -> where cargo puts the binaries.
out_dir() {
  local profile_dir="$2"
  [[ "$2" == dev ]] && profile_dir=debug
  case "$1" in
    x86_64-*) echo "target/$profile_dir" ;;
    *) echo "target/$1/$profile_dir" ;;
  esac
}
