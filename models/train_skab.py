#!/usr/bin/env python3
"""Train, quantize, calibrate and package the `skab-ae` asset-level (multivariate) model.

One command (from the repository root; `models/build.sh` runs it with the pinned venv):

    models/.venv/bin/python models/train_skab.py

Writes models/skab-ae/<version>/{model.tflite, manifest.json, golden.json} following
models/MANIFEST-FORMAT.md (`kind = "multivariate"`, `asset_warmup_zscore`). Reads SKAB from
../shared/data/skab relative to the repository root (override with --skab).

Data the SKAB protocol allows, and nothing else:
  * `anomaly-free/anomaly-free.csv` (no anomalies): its first 75 % (in time) trains, its last
    25 % is held out for calibration;
  * the first 400 rows (SKAB's training part) of every labelled file (`<group>/*.csv`): training.
The scored rows (row 400 onwards of the labelled files) are never read for training or
calibration: `labelled_training_rows` stops reading each file at row 400.

The model sees what the agent computes (`pipeline::asset`): a window of WINDOW one-second slots
x 8 channels, time-major, each channel z-scored by the mean/std of the asset's first WARMUP
readings (its warm-up baseline, frozen), scale floored at RELATIVE_STD_FLOOR x |mean|, clipped.
It is a *shift-denoising* autoencoder: half of the training inputs get one channel shifted by a
random 2..8 z (clipped), and the target is always the clean window, so the model learns to
reconstruct the asset's normal joint behaviour and *not* to follow a channel that leaves it;
reconstruction error is the anomaly evidence (`mse_ratio`).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

# Must be set before TensorFlow is imported (train_univariate sets the same).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_univariate import (  # noqa: E402  (shared conversion and packaging helpers)
    SCORE_BIN_EDGES,
    Z_BIN_EDGES,
    TFLiteRunner,
    _int8_io_quant,
    convert_int8,
    deterministic_tensorflow,
    hist,
    model_op_summary,
    output_quant_step,
    quantiles,
    score,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"

NAME = "skab-ae"
VERSION = "1.0.0"
CHANNELS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
            "Thermocouple", "Voltage", "Volume Flow RateRMS"]
C = len(CHANNELS)
WINDOW = 16  # one-second slots
WIDTH = WINDOW * C
WARMUP = 400  # = SKAB's training part: a new asset's baseline
TRAIN_ROWS = 400  # rows of each labelled file the protocol allows for training
MIN_STD = 0.001
RELATIVE_STD_FLOOR = 0.01
CLIP = 8.0
ALPHA = 0.0078125  # entity EWMA of the channels' own features (not used by this model's input)
SEED = 20261128
# Shift-denoising: share of training inputs with one channel shifted, and the shift range (z).
SHIFT_SHARE = 0.5
SHIFT_RANGE = (2.0, 8.0)
HELD_OUT_SHARE = 0.25  # last part of anomaly-free.csv (in time)
BASELINE_STEP_TRAIN = 100  # a simulated asset starts every this many rows
BASELINE_STEP_HELD = 50
HELD_SPAN = 750  # rows scored after a held-out asset's warm-up (a SKAB file's test part is ~750)
REVIEW = 0.5
ERROR_SCALE_QUANTILE = 0.99
ALERT_QUANTILE = 0.999
LOG10_ERROR_BIN_EDGES = [round(-3.0 + 0.25 * i, 3) for i in range(21)]  # 1e-3 .. 1e2


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def read_skab(path: str, max_rows: int | None = None) -> np.ndarray:
    """The 8 channels of a SKAB file (`;`-separated, `datetime` first), at most `max_rows` rows.
    Reading stops at `max_rows`: the rows after it are never parsed."""
    rows = []
    with open(path) as fh:
        header = [h.strip() for h in fh.readline().rstrip("\n").split(";")]
        idx = [header.index(c) for c in CHANNELS]
        for line in fh:
            if max_rows is not None and len(rows) >= max_rows:
                break
            if not line.strip():
                continue
            cells = line.rstrip("\n").split(";")
            rows.append([float(cells[i]) for i in idx])
    return np.asarray(rows, dtype=np.float64)


def baseline(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of a warm-up block, exactly as `pipeline::asset` (population std,
    floored at RELATIVE_STD_FLOOR x |mean| and MIN_STD)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.maximum(np.maximum(std, RELATIVE_STD_FLOOR * np.abs(mean)), MIN_STD)


def normalise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip((x - mean) / scale, -CLIP, CLIP)


def windows(z: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Windows of rows end-WINDOW+1..end, flattened time-major (t0c0, t0c1, ...)."""
    idx = ends[:, None] + np.arange(-WINDOW + 1, 1)[None, :]
    return z[idx].reshape(len(ends), WIDTH).astype(np.float32)


def warmup_windows(x: np.ndarray, starts) -> np.ndarray:
    """For each start: the block x[s:s+WARMUP] normalised by its own baseline, every window
    inside it (what the model should reconstruct: the asset's normal joint behaviour)."""
    out = []
    for s in starts:
        block = x[s:s + WARMUP]
        if len(block) < WARMUP:
            continue
        m, sc = baseline(block)
        out.append(windows(normalise(block, m, sc), np.arange(WINDOW - 1, WARMUP)))
    return np.concatenate(out)


def scored_windows(x: np.ndarray, starts, span: int) -> np.ndarray:
    """Held-out assets as the agent scores them: baseline = the first WARMUP rows from each
    start, then the windows the agent scores after the warm-up (window closed by row r covers
    rows r-WINDOW..r-1), for `span` rows."""
    out = []
    for s in starts:
        seg = x[s:s + WARMUP + span]
        if len(seg) < WARMUP + WINDOW:
            continue
        m, sc = baseline(seg[:WARMUP])
        z = normalise(seg, m, sc)
        out.append(windows(z, np.arange(WARMUP - 1, len(seg) - 1)))
    return np.concatenate(out)


def shift_corrupt(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift one random channel of SHIFT_SHARE of the windows by +-U(SHIFT_RANGE) z (clipped)."""
    y = x.copy().reshape(len(x), WINDOW, C)
    sel = np.where(rng.random(len(y)) < SHIFT_SHARE)[0]
    ch = rng.integers(0, C, len(sel))
    off = rng.uniform(*SHIFT_RANGE, len(sel)) * rng.choice([-1.0, 1.0], len(sel))
    y[sel, :, ch] = np.clip(y[sel, :, ch] + off[:, None], -CLIP, CLIP)
    return y.reshape(len(x), WIDTH)


# ----------------------------------------------------------------------------------------------
def build_model(keras):
    inp = keras.Input(shape=(WIDTH,), dtype="float32", name="z")
    h = keras.layers.Dense(64, activation="relu", name="enc1")(inp)
    h = keras.layers.Dense(16, activation="relu", name="code")(h)
    h = keras.layers.Dense(64, activation="relu", name="dec1")(h)
    out = keras.layers.Dense(WIDTH, activation=None, name="recon")(h)
    return keras.Model(inp, out, name="skab_ae")


def mse(z: np.ndarray, recon: np.ndarray) -> np.ndarray:
    return np.mean((z.astype(np.float64) - recon.astype(np.float64)) ** 2, axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skab", default=str(REPO_ROOT.parent / "shared" / "data" / "skab"))
    ap.add_argument("--out", default=str(MODELS_DIR / NAME / VERSION))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()

    t_start = time.time()
    tf, keras = deterministic_tensorflow(args.seed)
    rng = np.random.default_rng(args.seed)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    skab = Path(args.skab)

    # ---- data: only what the protocol allows ----
    free = read_skab(str(skab / "anomaly-free" / "anomaly-free.csv"))
    cut = int(len(free) * (1 - HELD_OUT_SHARE))
    free_train, free_held = free[:cut], free[cut:]
    labelled = sorted(glob.glob(str(skab / "*" / "*.csv")))
    labelled = [p for p in labelled if "anomaly-free" not in p]
    heads = [read_skab(p, max_rows=TRAIN_ROWS) for p in labelled]
    # Every 4th labelled file's training part (seeded order) is held out for calibration.
    order = rng.permutation(len(labelled))
    held_files = sorted(int(i) for j, i in enumerate(order) if j % 4 == 1)
    x_train = np.concatenate(
        [warmup_windows(free_train, range(0, len(free_train) - WARMUP + 1, BASELINE_STEP_TRAIN))]
        + [warmup_windows(h, [0]) for i, h in enumerate(heads) if i not in held_files])
    # Calibration: held-out normal behaviour around a fresh baseline (windows inside held-out
    # warm-up blocks: anomaly-free's last part and the held-out files' training parts).
    x_held = np.concatenate(
        [warmup_windows(free_held, range(0, len(free_held) - WARMUP + 1, BASELINE_STEP_HELD))]
        + [warmup_windows(heads[i], [0]) for i in held_files])
    # For information: the windows a held-out asset is scored on after its warm-up (anomaly-free
    # data drifts: accelerometers and thermocouple move several baseline std in ~10 minutes).
    x_drift = scored_windows(free_held, range(0, len(free_held) - WARMUP - WINDOW, BASELINE_STEP_HELD), HELD_SPAN)
    x_train = x_train[rng.permutation(len(x_train))]
    n_val = len(x_train) // 10
    x_val, x_fit = x_train[:n_val], x_train[n_val:]
    print(f"anomaly-free rows: train {len(free_train)}, held-out {len(free_held)}; labelled files "
          f"{len(labelled)} x first {TRAIN_ROWS} rows; windows fit {len(x_fit)}, val {len(x_val)}, "
          f"held-out {len(x_held)}", flush=True)

    # ---- train (shift-denoising) ----
    model = build_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    x_fit_in = shift_corrupt(x_fit, rng)
    x_val_in = shift_corrupt(x_val, rng)
    t_fit = time.time()
    hist_ = model.fit(x_fit_in, x_fit, validation_data=(x_val_in, x_val), epochs=args.epochs,
                      batch_size=256, shuffle=True, verbose=2)
    fit_seconds = time.time() - t_fit

    # ---- convert: representative set = random clean + corrupted windows + the extremes ----
    rep_idx = rng.choice(len(x_fit), size=160, replace=False)
    shifted = shift_corrupt(x_fit[rep_idx[:40]], rng)
    hi = np.argsort(-np.abs(x_fit_in).max(axis=1), kind="stable")[:20]
    rep_windows = np.concatenate([x_fit[np.sort(rep_idx)], shifted, x_fit_in[hi]])
    tfl = convert_int8(tf, model, rep_windows, width=WIDTH)
    model_path = out_dir / "model.tflite"
    model_path.write_bytes(tfl)
    sha = hashlib.sha256(tfl).hexdigest()
    print(f"model.tflite: {len(tfl)} bytes, sha256 {sha}", flush=True)
    if len(tfl) > 64 * 1024:
        raise SystemExit(f"model too large: {len(tfl)} bytes > 64 KB")
    run = TFLiteRunner(tf, model_path, width=WIDTH)
    for t in run.interp.get_tensor_details():
        if len(t["quantization_parameters"]["scales"]) > 1:
            raise SystemExit(f"per-channel quantized tensor {t['name']}: the TF Lite 2.6.0 trap")
    q_step = output_quant_step(run.interp)
    ops = model_op_summary(run.interp)

    rec_held = run(x_held)
    if not np.any(np.abs(rec_held) > 0):
        raise SystemExit("TFLite outputs are all zeros: per-channel dense quantization trap")
    keras_held = model.predict(x_held, batch_size=4096, verbose=0)
    diff = np.abs(rec_held - keras_held)

    # ---- calibration on held-out normal data (post-warm-up windows of held-out assets) ----
    err_held = mse(x_held, rec_held)
    error_scale = float(np.quantile(err_held, ERROR_SCALE_QUANTILE))
    sc_held = score(err_held, error_scale)
    q_alert = float(np.quantile(err_held, ALERT_QUANTILE))
    alert = math.ceil(float(score(np.array([q_alert]), error_scale)[0]) * 100 - 1e-9) / 100
    alert = min(max(alert, REVIEW + 0.05), 0.99)
    sc_drift = score(mse(x_drift, run(x_drift)), error_scale)
    print(f"error_scale {error_scale:.4f} (held-out p99), alert {alert}; held-out review rate "
          f"{np.mean(sc_held >= REVIEW):.4f}, alert rate {np.mean(sc_held >= alert):.5f}; "
          f"anomaly-free after warm-up: review rate {np.mean(sc_drift >= REVIEW):.4f}", flush=True)

    # ---- golden vectors ----
    g_rng = np.random.default_rng(args.seed + 2)
    idx = np.sort(g_rng.choice(len(x_held), size=10, replace=False))
    g_in = [x_held[i].copy() for i in idx]
    desc = [f"held-out normal window #{int(i)}" for i in idx]
    base = x_held[idx[0]].reshape(WINDOW, C)
    for ch, off, what in [(7, -6.0, "flow rate -6 z (a closed valve)"), (4, 4.0, "temperature +4 z"),
                          (2, 8.0, "current +8 z (clip)")]:
        w = base.copy()
        w[:, ch] = np.clip(w[:, ch] + off, -CLIP, CLIP)
        g_in.append(w.reshape(WIDTH)); desc.append(f"normal window, {what} on every slot")
    g_in.append(np.zeros(WIDTH, np.float32)); desc.append("all zeros (the baseline mean)")
    g_in = np.stack(g_in).astype(np.float32)
    g_out = run(g_in)
    one = TFLiteRunner(tf, model_path, width=WIDTH)
    g_out1 = np.concatenate([one(g_in[i:i + 1]) for i in range(len(g_in))])
    g_err = mse(g_in, g_out)
    g_score = score(g_err, error_scale)
    for d, e, s_ in zip(desc, g_err, g_score):
        print(f"golden  {d:50s} error {e:8.4f} score {s_:.3f}", flush=True)
    if not (g_score[10] >= REVIEW and g_score[10] > float(np.quantile(sc_held, 0.9)) + 0.1):
        raise SystemExit(f"sanity: a -6 z flow shift scores {g_score[10]:.3f}, not in review")
    # A raw stream for the agent's end-to-end check (agent/tests/inference_golden.rs replays it
    # through the live pipeline code): 440 held-out rows at 1 Hz, the flow rate dropped by 5 on
    # rows 420..439; the expected score of every row from the warm-up on (row r: the window of
    # rows r-WINDOW..r-1, normalised by rows 0..WARMUP-1), from the TF Lite interpreter.
    raw = free_held[:WARMUP + 40].copy()
    raw[WARMUP + 20:, CHANNELS.index("Volume Flow RateRMS")] -= 5.0
    raw = np.round(raw, 6)  # as written to the agent's CSV
    sm, ssc = baseline(raw[:WARMUP])
    s_ends = np.arange(WARMUP - 1, len(raw) - 1)
    s_win = windows(normalise(raw, sm, ssc), s_ends)
    s_scores = score(mse(s_win, run(s_win)), error_scale)
    stream = {
        "note": "raw rows at 1 Hz from first_timestamp_ms; row r >= first_scored_row has the score "
                "of the window of rows r-window..r-1 (asset_warmup_zscore over rows 0..warmup-1)",
        "channels": CHANNELS,
        "first_timestamp_ms": 1577836800000,
        "rows": [[float(v) for v in r] for r in raw],
        "first_scored_row": WARMUP,
        "scores": [float(v) for v in s_scores],
        "score_tolerance": 0.02,
    }
    golden = {
        "stream": stream,
        "inputs": [[float(v) for v in row] for row in g_in],
        "outputs": [[float(v) for v in row] for row in g_out],
        "tolerance": float(3 * q_step),
        "descriptions": desc,
        "errors": [float(e) for e in g_err],
        "scores": [float(s_) for s_ in g_score],
        "note": "outputs from tf.lite.Interpreter (TensorFlow %s) on model.tflite; tolerance = 3 "
                "output quantization steps (step %.6g)" % (tf.__version__, q_step),
    }
    (out_dir / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")

    training = {
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "script": "models/train_skab.py",
        "seed": args.seed,
        "data": {
            "skab": "waico/SKAB b2c0d46 (GPL-3.0 data), read from ../shared/data/skab",
            "train": f"anomaly-free.csv rows 0..{cut} (blocks of {WARMUP} rows every "
                     f"{BASELINE_STEP_TRAIN} rows, each normalised by its own baseline) + the first "
                     f"{TRAIN_ROWS} rows of each of {len(labelled)} labelled files (normalised by "
                     "themselves); rows >= 400 of labelled files are never read",
            "held_out": f"anomaly-free.csv rows {cut}..{len(free)} (blocks of {WARMUP} rows every "
                        f"{BASELINE_STEP_HELD} rows) + the first {TRAIN_ROWS} rows of the held-out "
                        "labelled files, each normalised by its own baseline",
            "held_out_files": [os.path.relpath(labelled[i], skab) for i in held_files],
            "labelled_files": [os.path.relpath(p, skab) for p in labelled],
            "windows": {"fit": int(len(x_fit)), "validation": int(len(x_val)), "held_out": int(len(x_held)),
                        "representative": int(len(rep_windows))},
        },
        "model": {
            "architecture": f"dense shift-denoising autoencoder {WIDTH}-64(relu)-16(relu)-64(relu)-{WIDTH}(linear)",
            "params": int(model.count_params()),
            "optimizer": "Adam lr 2e-3, mse, batch 256",
            "epochs": args.epochs,
            "denoising": f"{SHIFT_SHARE:.0%} of inputs: one random channel shifted by +-U{SHIFT_RANGE} z "
                         "(clipped); target = the clean window",
            "final_loss": float(hist_.history["loss"][-1]),
            "final_val_loss": float(hist_.history["val_loss"][-1]),
            "quantization": "int8 weights/activations (per-tensor dense), float32 input/output, "
                            "_experimental_disable_per_channel_quantization_for_dense_layers",
            "tflite_ops": ops,
            "file_bytes": len(tfl),
            "output_quant_step": q_step,
            "tflite_vs_keras_max_abs_diff_held_out": float(diff.max()),
            "tflite_vs_keras_p99_abs_diff_held_out": float(np.quantile(diff, 0.99)),
            "int8_io_quantization": _int8_io_quant(run.interp),
            "batch1_equals_batch_n": bool(np.array_equal(g_out, g_out1)),
        },
        "calibration": {
            "on": "held-out normal windows inside held-out warm-up blocks, TFLite outputs",
            "error_scale": "p99 of held-out error, so score(p99) = 0.5 = review",
            "alert": "score of the held-out p99.9 error rounded up to 0.01",
            "held_out_error_quantiles": quantiles(err_held),
            "held_out_score_quantiles": quantiles(sc_held),
            "held_out_review_rate": float(np.mean(sc_held >= REVIEW)),
            "anomaly_free_after_warmup": {
                "windows": int(len(x_drift)),
                "what": f"held-out anomaly-free assets scored for {HELD_SPAN} rows after their warm-up",
                "review_rate": float(np.mean(sc_drift >= REVIEW)),
                "alert_rate": float(np.mean(sc_drift >= alert)),
                "score_quantiles": quantiles(sc_drift),
            },
            "held_out_alert_rate": float(np.mean(sc_held >= alert)),
        },
        "feature_distributions": {
            "input_z_train": hist(x_fit.ravel(), Z_BIN_EDGES),
            "input_z_held_out": hist(x_held.ravel(), Z_BIN_EDGES),
            "score_held_out": hist(sc_held, SCORE_BIN_EDGES),
            "log10_error_held_out": hist(np.log10(np.maximum(err_held, 1e-12)), LOG10_ERROR_BIN_EDGES),
        },
        "timing_seconds": {"fit": round(fit_seconds, 1), "total": round(time.time() - t_start, 1)},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__, "platform": platform.platform()},
    }
    manifest = {
        "schema": 1,
        "name": NAME,
        "version": VERSION,
        "kind": "multivariate",
        "file": "model.tflite",
        "sha256": sha,
        "input": {"window": WINDOW, "channels": CHANNELS, "dtype": "float32"},
        "output": {"kind": "reconstruction", "dtype": "float32"},
        "normalisation": {"method": "asset_warmup_zscore", "alpha": ALPHA, "min_std": MIN_STD, "clip": CLIP,
                          "warmup": WARMUP, "relative_std_floor": RELATIVE_STD_FLOOR},
        "score": {"method": "mse_ratio", "error_scale": error_scale},
        "thresholds": {"review": REVIEW, "alert": alert},
        "training": training,
        "golden": "golden.json",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out_dir} in {time.time() - t_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
