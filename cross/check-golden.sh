#!/usr/bin/env bash
# Do two builds of `vigil` score the same? The x86_64 reference (tflitec, TF Lite 2.6.0) against
# a cross-built binary (ARM: the vendored TF Lite 1.15 C++ backend), run under qemu-user when
# its ELF machine is not the host's.
#
#   bash cross/check-golden.sh REFERENCE_BIN CANDIDATE_BIN
#
# 1. Every shipped model (models/*/*/): `vigil model-check` must pass on both (every output
#    element within the model's golden tolerance of TensorFlow's) and every golden window's
#    score must agree within SCORE_TOLERANCE (0.02 on the [0, 1) score; the alert thresholds
#    are 0.5 / 0.73).
# 2. End to end: `vigil replay` (windows, normalisation, micro-batched inference, alert logic)
#    of a generated 2-sensor CSV (sine waves, a spike and a level shift) with
#    config/replay.toml (alerts.score = "model"); every output row's score must agree within SCORE_TOLERANCE.
# Prints the largest differences. Exit 1 on any disagreement.
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${1:?usage: check-golden.sh REFERENCE_BIN CANDIDATE_BIN}"
cand="${2:?usage: check-golden.sh REFERENCE_BIN CANDIDATE_BIN}"
# Measured: aarch64 identical to x86_64; armv7 (no NEON: TF Lite's portable kernels) differs in
# 7 of 3000 replay rows by at most 0.0079, i.e. one int8 output step at the top-1 error slot.
SCORE_TOLERANCE="${SCORE_TOLERANCE:-0.02}"

# run_bin BIN ARGS...: natively, or under qemu-user chosen by the ELF's e_machine.
run_bin() {
  local bin="$1"; shift
  case "$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n')" in
    b700) qemu-aarch64-static -L /usr/aarch64-linux-gnu "$bin" "$@" ;;
    2800) qemu-arm-static -L /usr/arm-linux-gnueabihf "$bin" "$@" ;;
    *) "$bin" "$@" ;;
  esac
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0

for model in models/*/*/; do
  [[ -f "$model/manifest.json" ]] || continue
  run_bin "$ref" model-check "$model" >"$tmp/ref.json" 2>"$tmp/ref.log" \
    || { echo "check-golden: reference failed on $model:"; cat "$tmp/ref.log"; exit 1; }
  run_bin "$cand" model-check "$model" >"$tmp/cand.json" 2>"$tmp/cand.log" \
    || { echo "check-golden: FAIL $model: $cand's golden check failed:"; cat "$tmp/cand.log"; fail=1; continue; }
  python3 - "$tmp/ref.json" "$tmp/cand.json" "$SCORE_TOLERANCE" "$model" <<'PY' || fail=1
import json, sys
ref, cand = (json.load(open(p)) for p in sys.argv[1:3])
tol, model = float(sys.argv[3]), sys.argv[4]
diffs = [abs(a - b) for a, b in zip(ref["scores"], cand["scores"])]
ok = len(ref["scores"]) == len(cand["scores"]) and max(diffs) <= tol
print(f"check-golden: {'ok  ' if ok else 'FAIL'} {model}: {len(diffs)} golden windows, "
      f"max |score diff| {max(diffs):.3g} (tolerance {tol}); outputs vs TensorFlow: "
      f"{ref['arch']} max {ref['max_abs_diff']:.4g}, {cand['arch']} ({cand['backend'].split(' ')[0]} "
      f"TF Lite {cand['tflite']}) max {cand['max_abs_diff']:.4g}, golden tolerance {cand['tolerance']:.4g}; "
      f"inference {ref.get('us_per_window', float('nan')):.3g} vs {cand.get('us_per_window', float('nan')):.3g} us/window")
sys.exit(0 if ok else 1)
PY
done

# A plant-like CSV: two sensors at 1 s, sine + slow drift, a spike at row 2000 (a) and a level
# shift from row 2600 (b). Deterministic.
# (Epoch seconds + "000": mawk's %d is 32-bit.)
awk 'BEGIN { print "timestamp,a,b"; t0 = 1700000000;
  for (i = 0; i < 3000; i++) {
    a = 20 + 2 * sin(i / 15.0) + 0.3 * sin(i / 3.1) + (i == 2000 ? 9 : 0);
    b = 5 + sin(i / 40.0) + 0.2 * cos(i / 7.3) + (i >= 2600 ? 3 : 0);
    printf "%d000,%.4f,%.4f\n", t0 + i, a, b } }' >"$tmp/plant.csv"
# config/replay.toml scored by the model itself (not relative to each entity's history).
sed -e 's#^score = .*#score = "model"#' -e "s#\.\./models/#$PWD/models/#" -e "s#\.\./target/#$tmp/#" \
  config/replay.toml >"$tmp/replay.toml"
grep -q '^score = "model"' "$tmp/replay.toml" || { echo "check-golden: config/replay.toml has no alerts.score" >&2; exit 1; }
for who in ref cand; do
  bin="$ref"; [[ $who == cand ]] && bin="$cand"
  run_bin "$bin" replay -c "$tmp/replay.toml" --input "$tmp/plant.csv" --out "$tmp/$who.csv" \
    >"$tmp/$who.replay.log" 2>&1 || { echo "check-golden: replay failed ($bin):"; cat "$tmp/$who.replay.log"; exit 1; }
done
python3 - "$tmp/ref.csv" "$tmp/cand.csv" "$SCORE_TOLERANCE" <<'PY' || fail=1
import csv, sys
ref, cand = (list(csv.DictReader(open(p))) for p in sys.argv[1:3])
tol = float(sys.argv[3])
assert len(ref) == len(cand), f"{len(ref)} vs {len(cand)} rows"
scored = [(r, c) for r, c in zip(ref, cand) if float(r["score"] or 0) > 0 or float(c["score"] or 0) > 0]
diffs = [abs(float(r["score"] or "nan") - float(c["score"] or "nan")) for r, c in scored]
worst = max(diffs) if diffs else float("nan")
alerts = lambda rows: sum(1 for x in rows if x.get("alert") not in ("", "0", None))
differ = sum(1 for d in diffs if d > 1e-6)
bands = sum(1 for r, c in zip(ref, cand) if r["band"] != c["band"])
# A replay that scores nothing would compare nothing: demand scored windows on both sides.
ok = len(scored) > 1000 and all(d <= tol for d in diffs)
print(f"check-golden: {'ok  ' if ok else 'FAIL'} replay of 3000 rows x 2 sensors: {len(scored)} scored rows, "
      f"{differ} differ, max |score diff| {worst:.3g} (tolerance {tol}); band mismatches {bands}; "
      f"alert rows: reference {alerts(ref)}, candidate {alerts(cand)}")
sys.exit(0 if ok else 1)
PY
exit "$fail"
