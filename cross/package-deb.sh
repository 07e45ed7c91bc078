#!/usr/bin/env bash
# Package a built `vigil` binary as a Debian package: target/deb/vigil_<version>_<arch>.deb
#
#   bash cross/package-deb.sh aarch64|armv7|x86_64 [release|dev]     (default: release)
#
# Built with dpkg-deb from this script rather than cargo-deb: cargo-deb is not installed here and
# compiling it costs minutes of CI time per run, while the package is a handful of files.
#
# Contents:
#   /usr/lib/vigil/vigil                 the binary (RUNPATH $ORIGIN)
#   /usr/lib/vigil/libtensorflowlite_c.so  x86_64 only: the dynamic TF Lite 2.6.0 C library
#                                        (ARM binaries link TF Lite 1.15 statically)
#   /usr/bin/vigil                       -> ../lib/vigil/vigil
#   /etc/vigil/vigil.toml                default config (conffile), from cross/deb/vigil.toml
#   /usr/share/vigil/models/             the shipped models (manifest, model, golden vectors)
#   /lib/systemd/system/vigil.service    the unit (cross/deb/vigil.service)
#   /usr/share/doc/vigil/                README.md, the fully documented config/vigil.toml
# Maintainer scripts: postinst creates the system user `vigil` (group dialout for serial ports)
# and /var/lib/vigil, enables and starts the unit when systemd runs; prerm stops it; purge
# removes /var/lib/vigil.
set -euo pipefail
cd "$(dirname "$0")/.."
source cross/targets.sh

triple="$(triple_of "${1:?usage: package-deb.sh aarch64|armv7|x86_64 [release|dev]}")"
profile="${2:-release}"
arch="$(deb_arch_of "$triple")"
bin="$(out_dir "$triple" "$profile")/vigil"
[[ -x "$bin" ]] || { echo "package-deb: $bin not built (bash cross/build.sh ${1})" >&2; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"

stage="target/deb/vigil_${version}_${arch}"
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/lib/vigil" "$stage/usr/bin" "$stage/etc/vigil" \
  "$stage/usr/share/vigil/models" "$stage/lib/systemd/system" "$stage/usr/share/doc/vigil"
install -m 0755 "$bin" "$stage/usr/lib/vigil/vigil"
# A debug (dev profile) binary is stripped here so the package stays small.
if [[ "$profile" != release ]]; then
  strip_tool=strip
  case "$triple" in
    aarch64-*) strip_tool=aarch64-linux-gnu-strip ;;
    armv7-*) strip_tool=arm-linux-gnueabihf-strip ;;
  esac
  "$strip_tool" --strip-all "$stage/usr/lib/vigil/vigil"
fi
ln -s ../lib/vigil/vigil "$stage/usr/bin/vigil"
needed="$(readelf -d "$stage/usr/lib/vigil/vigil" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
if grep -qx libtensorflowlite_c.so <<<"$needed"; then
  lib="$(out_dir "$triple" "$profile")/libtensorflowlite_c.so"
  [[ "$triple" == x86_64-* ]] && lib="target/tflite/$triple/libtensorflowlite_c.so"
  [[ -f "$lib" ]] || { echo "package-deb: $lib missing (cross/tflite/provide-runtime.sh)" >&2; exit 1; }
  install -m 0644 "$lib" "$stage/usr/lib/vigil/libtensorflowlite_c.so"
fi
install -m 0644 cross/deb/vigil.toml "$stage/etc/vigil/vigil.toml"
for m in models/*/; do [[ -n "$(ls "$m"*/manifest.json 2>/dev/null)" ]] && cp -r "$m" "$stage/usr/share/vigil/models/"; done
install -m 0644 cross/deb/vigil.service "$stage/lib/systemd/system/vigil.service"
install -m 0644 README.md "$stage/usr/share/doc/vigil/README.md"
install -m 0644 config/vigil.toml "$stage/usr/share/doc/vigil/vigil.toml"
find "$stage/usr/share" -type d -exec chmod 0755 {} +
find "$stage/usr/share" -type f -exec chmod 0644 {} +

# Runtime dependencies from the binary's NEEDED entries (dpkg-shlibdeps would need the
# target's libraries installed as packages of that architecture).
depends="libc6 (>= 2.34)"
grep -q '^libgcc_s' <<<"$needed" && depends+=", libgcc-s1"
grep -q '^libstdc++' <<<"$needed" && depends+=", libstdc++6"
size_kb="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"

cat > "$stage/DEBIAN/control" <<CONTROL
Package: vigil
Version: $version
Architecture: $arch
Maintainer: Vigil maintainers <vigil@localhost>
Section: net
Priority: optional
Depends: $depends, passwd
Installed-Size: $size_kb
Homepage: https://localhost/vigil
Description: Vigil edge anomaly-detection agent
 Ingests plant sensor readings (MQTT, Modbus, serial), scores sliding windows with a
 TensorFlow Lite autoencoder on the gateway, raises alerts and forwards everything
 store-and-forward to the plant's uplinks. Runs as the systemd service vigil.
CONTROL
echo /etc/vigil/vigil.toml > "$stage/DEBIAN/conffiles"

cat > "$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  getent group vigil >/dev/null || groupadd --system vigil
  getent passwd vigil >/dev/null || useradd --system --gid vigil --home-dir /var/lib/vigil \
    --no-create-home --shell /usr/sbin/nologin --comment "Vigil agent" vigil
  getent group dialout >/dev/null && usermod -a -G dialout vigil
  # systemd creates it too (StateDirectory=); this serves a start without systemd.
  install -d -o vigil -g vigil -m 0750 /var/lib/vigil
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable vigil.service >/dev/null
  systemctl restart vigil.service || echo "vigil: the service did not start; see journalctl -u vigil" >&2
fi
exit 0
SCRIPT
cat > "$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop vigil.service || true
  systemctl disable vigil.service >/dev/null || true
fi
exit 0
SCRIPT
cat > "$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
[ -d /run/systemd/system ] && systemctl daemon-reload || true
if [ "$1" = purge ]; then
  rm -rf /var/lib/vigil
fi
exit 0
SCRIPT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

deb="target/deb/vigil_${version}_${arch}.deb"
# xz for release packages; a dev-profile package (CI) is only installed once: fast gzip.
compress=(-Zxz)
[[ "$profile" == release ]] || compress=(-Zgzip -z1)
dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "package-deb: $deb ($(stat -c %s "$deb") bytes; binary $(stat -c %s "$bin") bytes before packaging)"
