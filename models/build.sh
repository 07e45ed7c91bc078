#!/usr/bin/env bash
# Reproduces every shipped model with one command, from the repository root or anywhere:
#
#   bash models/build.sh                 # rewrites models/<name>/<version>/ in place
#   OUT=/tmp/rebuild bash models/build.sh  # writes to /tmp/rebuild/<name>/<version>/ instead
#
# 1. a venv in models/.venv with the pinned Python dependencies (models/requirements.txt: the full
#    `pip freeze` of tensorflow-cpu 2.21.0; Python 3.11),
# 2. univariate-ae: models/train_univariate.py (NAB from $NAB, default ../shared/data/nab),
# 3. skab-ae: models/train_skab.py (SKAB from $SKAB, default ../shared/data/skab).
# Each script is seeded and single-threaded with TF op determinism; each prepares its data,
# trains, converts to int8 (per-tensor dense quantization), calibrates thresholds on held-out
# normal data and writes model.tflite, golden.json and manifest.json (sha256, input layout,
# normalisation, thresholds, training summary, drift reference distributions).
# At the end it prints each model's sha256 next to the shipped one. The agent's test suite
# (agent/tests/inference_golden.rs) checks what ships: sha256 and golden vectors through TF Lite.
set -euo pipefail
cd "$(dirname "$0")/.."
NAB="${NAB:-../shared/data/nab}"
SKAB="${SKAB:-../shared/data/skab}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

if [[ ! -x models/.venv/bin/python ]]; then
  "$PY" -m venv models/.venv
fi
models/.venv/bin/pip install --quiet --disable-pip-version-check -r models/requirements.txt

out_of() { # name version
  if [[ -n "${OUT:-}" ]]; then echo "$OUT/$1/$2"; else echo "models/$1/$2"; fi
}
t0=$SECONDS
models/.venv/bin/python models/train_univariate.py --nab "$NAB" --out "$(out_of univariate-ae 1.1.0)"
models/.venv/bin/python models/train_skab.py --skab "$SKAB" --out "$(out_of skab-ae 1.0.0)"

echo "built in $((SECONDS - t0)) s"
for m in univariate-ae/1.1.0 skab-ae/1.0.0; do
  name=${m%/*}; ver=${m#*/}
  built=$(sha256sum "$(out_of "$name" "$ver")/model.tflite" | cut -d' ' -f1)
  shipped=$(git show "HEAD:models/$m/manifest.json" 2>/dev/null | sed -n 's/.*"sha256": "\([0-9a-f]*\)".*/\1/p' | head -1)
  if [[ "$built" == "$shipped" ]]; then verdict="identical to the shipped model"; else verdict="DIFFERS from the shipped $shipped"; fi
  echo "$m: model.tflite sha256 $built ($verdict)"
done
