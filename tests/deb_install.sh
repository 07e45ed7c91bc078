#!/usr/bin/env bash
# Install the x86_64 .deb on this (CI) machine and start the agent the way the systemd unit
# does — as user vigil, with the packaged /etc/vigil/vigil.toml, state in /var/lib/vigil — then
# check /health and /metrics, stop it with SIGTERM (clean exit required) and purge the package.
# No systemd needed: the CI container has none. The unit itself is checked with
# `systemd-analyze verify` when that tool exists.
#
#   bash tests/deb_install.sh [PROFILE]     (default: dev — CI packages the debug binary that
#                                            its test run built; release: cross/build.sh x86_64)
# Needs root (dpkg -i). Fails if anything listens on 127.0.0.1:9464 (the packaged api.listen).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dev}"

bash cross/package-deb.sh x86_64 "$profile"
deb="$(ls target/deb/vigil_*_amd64.deb)"
log="$(mktemp)"
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null
  dpkg --purge vigil >/dev/null 2>&1 || true
  rm -f "$log"
}
trap cleanup EXIT

dpkg -i "$deb"
getent passwd vigil >/dev/null || { echo "deb_install: user vigil missing after dpkg -i" >&2; exit 1; }
[[ "$(stat -c %U:%a /var/lib/vigil)" == vigil:750 ]] || { echo "deb_install: /var/lib/vigil is $(stat -c %U:%a /var/lib/vigil)" >&2; exit 1; }
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/vigil.service
  echo "deb_install: systemd-analyze verify vigil.service: OK"
fi
runuser -u vigil -- /usr/bin/vigil model-check /usr/share/vigil/models/univariate-ae/1.1.0 >/dev/null
runuser -u vigil -- /usr/bin/vigil check-config /etc/vigil/vigil.toml >/dev/null

http_get() { # PATH -> body of a 200 answer from 127.0.0.1:9464, else non-zero
  exec 3<>/dev/tcp/127.0.0.1/9464 || return 1
  printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$1" >&3
  local answer
  answer="$(cat <&3)"
  exec 3<&-
  [[ "$answer" == "HTTP/1.0 200"* || "$answer" == "HTTP/1.1 200"* ]] || return 1
  printf '%s\n' "${answer#*$'\r\n\r\n'}"
}
if http_get /health >/dev/null 2>&1; then
  echo "deb_install: something already answers on 127.0.0.1:9464" >&2
  exit 1
fi

# As ExecStart= runs it: user vigil (+ dialout), / as working directory, an empty environment.
# setpriv execs the agent itself, so $pid is the agent and SIGTERM reaches it directly.
(cd / && exec setpriv --reuid=vigil --regid=vigil --init-groups --reset-env \
  /usr/bin/vigil run --config /etc/vigil/vigil.toml) >"$log" 2>&1 &
pid=$!
# Wait for the API (bounded: 120 s on a loaded machine), or for the agent to exit.
healthy=""
for _ in $(seq 1 240); do
  if body="$(http_get /health 2>/dev/null)"; then healthy="$body"; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
if [[ "$healthy" != ok* ]]; then
  echo "deb_install: the packaged agent never answered /health; its log:" >&2
  cat "$log" >&2
  exit 1
fi
# Read the page first: `http_get | grep -q` under pipefail fails whenever grep quits at its first
# match before http_get has written the rest (SIGPIPE), which happened in a CI run.
metrics="$(http_get /metrics)" || { echo "deb_install: /metrics did not answer 200" >&2; cat "$log" >&2; exit 1; }
grep -q '^vigil_' <<<"$metrics" || { echo "deb_install: /metrics has no vigil_ metric" >&2; cat "$log" >&2; exit 1; }
grep -q "golden vectors verified" "$log" || { echo "deb_install: no golden check in the log" >&2; cat "$log" >&2; exit 1; }
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=""
if [[ $rc -ne 0 ]]; then
  echo "deb_install: the agent exited with $rc after SIGTERM; its log:" >&2
  cat "$log" >&2
  exit 1
fi
[[ -f /var/lib/vigil/state.redb ]] || { echo "deb_install: no state in /var/lib/vigil" >&2; exit 1; }
[[ "$(stat -c %U /var/lib/vigil/state.redb)" == vigil ]] || { echo "deb_install: state not owned by vigil" >&2; exit 1; }
echo "deb_install: $deb installed; agent as user vigil healthy on 127.0.0.1:9464, clean stop; purged"
