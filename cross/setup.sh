#!/usr/bin/env bash
# Install what building and running Vigil for TARGETs needs on a Debian 12 machine (idempotent,
# seconds when everything is present):
#   * Debian cross toolchains (gcc/g++ + libc for the target: Rust's linker, and TF Lite's C++
#     for the tflite-vendored backend), qemu-user-static (runs ARM binaries and tests here),
#     libclang-dev (bindgen in tflitec/tflite build scripts), dpkg-dev (packaging),
#   * the Rust standard library for each target (rustup target add).
# Usage: bash cross/setup.sh aarch64|armv7|x86_64 ...
# Needs root for apt-get; otherwise it prints the packages to install.
set -euo pipefail
cd "$(dirname "$0")/.."
source cross/targets.sh

pkgs=(libclang-dev unzip dpkg-dev)
triples=()
for t in "$@"; do
  triple="$(triple_of "$t")"
  triples+=("$triple")
  case "$triple" in
    aarch64-*) pkgs+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static) ;;
    armv7-*) pkgs+=(gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static) ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" -eq 0 ]]; then
    echo "cross/setup.sh: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
  else
    echo "cross/setup.sh: missing Debian packages; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

installed="$(rustup target list --installed)"
for triple in "${triples[@]}"; do
  grep -qx "$triple" <<<"$installed" || rustup target add "$triple"
done
