#!/usr/bin/env python3
"""Train, quantize, calibrate and package the `univariate-ae` model for the Vigil agent.

One command (from the repository root):

    models/.venv/bin/python models/train_univariate.py

Writes models/univariate-ae/<version>/{model.tflite, manifest.json, golden.json} following
models/MANIFEST-FORMAT.md. Reads NAB from ../shared/data/nab relative to the repository root
(override with --nab). Seeded; deterministic as far as TensorFlow allows (op determinism on,
single-threaded), so re-running gives the same windows, normally the same weights, and the
same calibration procedure.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# Must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"

NAME = "univariate-ae"
VERSION = "1.1.0"
WINDOW = 32
# EWMA alpha as in the manifest: 0.0078125 = 1/128 = 2/(255+1). (Note: 2/257 would be
# 0.00778...; the manifest value is the contract, and it is exactly representable in f32.)
ALPHA = 0.0078125
MIN_STD = 0.001
CLIP = 8.0
WARMUP = 256
SEED = 20261128
# entity_noise_zscore: squared first differences are capped at NOISE_CAP^2 times the current
# noise variance before they enter the EWMA (a fixed constant of the method, see the format doc).
NOISE_CAP = 4.0
# topk_mse_ratio: error = mean of the K largest squared per-slot errors.
TOPK = 1
# entity_noise_zscore: the scale is at least this fraction of the window's own standard
# deviation, so regime steps and ramps inside a window stay inside the clip range.
WINDOW_STD_RATIO = 0.5

# Score calibration targets.
REVIEW = 0.5  # score threshold for "review"; error_scale is set so that REVIEW <=> p99 error
ERROR_SCALE_QUANTILE = 0.99
ALERT_MAX_FALSE_RATE = 1e-4  # held-out normal windows with score >= alert must be <= 0.01 %

# Fixed histogram bins (kept stable across model versions so PSI can compare them).
Z_BIN_EDGES = [round(-8.0 + 0.5 * i, 3) for i in range(33)]  # 32 bins over [-8, 8]
SCORE_BIN_EDGES = [round(0.05 * i, 3) for i in range(21)]  # 20 bins over [0, 1]
LOG10_ERROR_BIN_EDGES = [round(-4.0 + 0.25 * i, 3) for i in range(25)]  # 1e-4 .. 1e2


# ----------------------------------------------------------------------------------------------
# Normalisation: exactly models/MANIFEST-FORMAT.md `entity_noise_zscore` (the EWMA mean/var of
# `entity_ewma_zscore` is kept for the injected-anomaly sizing history and for reference).
# ----------------------------------------------------------------------------------------------
def ewma_mean_var(x: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Running EWMA mean/variance after each reading (state after the update with reading t).

    Computed in float64 in the manifest's order: first reading mean = x, var = 0; afterwards
    d = x - mean; mean += alpha * d; var = (1 - alpha) * (var + alpha * d * d).
    """
    n = len(x)
    means = np.empty(n, dtype=np.float64)
    vars_ = np.empty(n, dtype=np.float64)
    mean = float(x[0])
    var = 0.0
    means[0] = mean
    vars_[0] = var
    a = alpha
    for t in range(1, n):
        d = float(x[t]) - mean
        mean += a * d
        var = (1.0 - a) * (var + a * d * d)
        means[t] = mean
        vars_[t] = var
    return means, vars_


def noise_var_series(x: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Running noise variance after each reading (manifest `entity_noise_zscore`), float64.

    First reading: no difference. Afterwards with n = number of differences so far (this one
    included): q = (x_t - x_{t-1})^2 / 2; if nvar > 0: q = min(q, NOISE_CAP^2 * nvar);
    nvar += max(alpha, 1/n) * (q - nvar).
    """
    n = len(x)
    out = np.zeros(n, dtype=np.float64)
    nvar = 0.0
    cap2 = NOISE_CAP * NOISE_CAP
    xs = [float(v) for v in x]
    for t in range(1, n):
        d = xs[t] - xs[t - 1]
        q = 0.5 * d * d
        if nvar > 0.0 and q > cap2 * nvar:
            q = cap2 * nvar
        a = max(alpha, 1.0 / t)
        nvar += a * (q - nvar)
        out[t] = nvar
    return out


def windows_for_series(x: np.ndarray, hop: int = 1, ends: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All windows the agent would score for this entity; returns (windows[N, W] f32, end idx).

    A window emitted at reading t (0-based) covers raw values x[t-W+1 .. t], normalised with the
    EWMA state after reading t. Windows exist once the entity has seen `WARMUP` readings
    (t + 1 >= WARMUP) and has W readings (t + 1 >= W).
    """
    x = np.asarray(x, dtype=np.float64)
    nvars = noise_var_series(x)
    first = max(WARMUP, WINDOW) - 1
    if ends is None:
        ends = np.arange(first, len(x), hop)
    else:
        ends = ends[ends >= first]
    if len(ends) == 0:
        return np.zeros((0, WINDOW), np.float32), ends
    idx = ends[:, None] + np.arange(-WINDOW + 1, 1)[None, :]
    raw = x[idx]
    std = np.maximum(np.sqrt(nvars[ends]), MIN_STD)
    centred = raw - raw.mean(axis=1, keepdims=True)
    if WINDOW_STD_RATIO > 0:
        tc = np.arange(WINDOW, dtype=np.float64) - (WINDOW - 1) / 2.0
        slope = centred @ tc / float(tc @ tc)
        resid = centred - slope[:, None] * tc[None, :]
        std = np.maximum(std, WINDOW_STD_RATIO * np.sqrt(np.mean(resid * resid, axis=1)))
    z = centred / std[:, None]
    z = np.clip(z, -CLIP, CLIP)
    return z.astype(np.float32), ends


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def read_nab_csv(path: str) -> tuple[list[str], np.ndarray]:
    ts, vals = [], []
    with open(path, newline="") as fh:
        r = csv.reader(fh)
        header = next(r)
        assert header[:2] == ["timestamp", "value"], (path, header)
        for row in r:
            ts.append(row[0])
            vals.append(float(row[1]))
    return ts, np.asarray(vals, dtype=np.float64)


def nab_series(nab_dir: Path) -> list[dict]:
    """artificialNoAnomaly/* whole + the probation part (first 15 %, max 750 rows) of every
    other NAB file. Windows touching a labelled anomaly window are dropped (none do in the
    probation parts of NAB ea702d7, but we check)."""
    labels = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    out = []
    for path in sorted(glob.glob(str(nab_dir / "data" / "*" / "*.csv"))):
        rel = os.path.relpath(path, nab_dir / "data")
        ts, x = read_nab_csv(path)
        n = len(x)
        if rel.startswith("artificialNoAnomaly/"):
            keep = n
            part = "whole"
        else:
            keep = min(int(math.floor(0.15 * n)), 750)
            part = "probation"
        ts, x = ts[:keep], x[:keep]
        bad = np.zeros(keep, dtype=bool)
        for start, end in labels.get(rel, []):
            # timestamps are ISO-like strings of identical format -> lexicographic compare works
            s, e = start[:19], end[:19]
            bad |= np.array([(s <= t[:19] <= e) for t in ts], dtype=bool)
        out.append({"source": f"nab:{rel}", "part": part, "values": x, "anomalous_mask": bad})
    return out


def synthetic_series(rng: np.random.Generator, n_each: int, length: int) -> list[dict]:
    """Normal-behaviour plant-sensor-like series (sampled e.g. every 10 s)."""
    out = []
    t = np.arange(length, dtype=np.float64)
    for i in range(n_each):
        # temperature: slow drift (random walk, smoothed) + slow daily-ish cycle + sensor noise
        base = rng.uniform(20.0, 80.0)
        walk = np.cumsum(rng.normal(0.0, 0.02, length))
        period = rng.uniform(500.0, 3000.0)
        cyc = rng.uniform(0.2, 3.0) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        noise = rng.normal(0.0, rng.uniform(0.02, 0.3), length)
        x = base + walk + cyc + noise
        if rng.random() < 0.5:  # some sensors report with 0.1 degree resolution
            x = np.round(x, 1)
        out.append({"source": f"synthetic:temperature_{i}", "part": "whole", "values": x})

        # vibration RMS: noisy positive (log-normal-ish), occasional changes in load level
        level = rng.uniform(0.5, 5.0)
        load = np.repeat(rng.uniform(0.8, 1.25, length // 400 + 1), 400)[:length]
        load = np.convolve(load, np.ones(50) / 50, mode="same")
        x = level * load * np.exp(rng.normal(0.0, rng.uniform(0.05, 0.35), length))
        out.append({"source": f"synthetic:vibration_{i}", "part": "whole", "values": x})

        # motor current: duty cycle steps (on/off with random durations) + noise
        on_level = rng.uniform(5.0, 40.0)
        off_level = rng.uniform(0.0, 0.2) * on_level
        mean_on = rng.uniform(20, 200)
        mean_off = rng.uniform(20, 200)
        x = np.empty(length)
        pos, state = 0, bool(rng.random() < 0.5)
        while pos < length:
            dur = max(3, int(rng.exponential(mean_on if state else mean_off)))
            x[pos:pos + dur] = on_level if state else off_level
            pos += dur
            state = not state
        x = x + rng.normal(0.0, rng.uniform(0.005, 0.03) * on_level, length)
        out.append({"source": f"synthetic:current_{i}", "part": "whole", "values": x})

        # duty-cycled machine, 1 reading per second: a thermal first-order lag following the
        # on/off load, and a load-dependent vibration level (normal behaviour only)
        on = _duty_cycle(rng, length, rng.uniform(60, 400), rng.uniform(40, 300), 15)
        tau = rng.uniform(80.0, 600.0)
        amb = rng.uniform(15.0, 30.0) + rng.uniform(0, 3) * np.sin(2 * np.pi * t / rng.uniform(5e3, 3e4))
        rise = np.where(on, rng.uniform(10.0, 50.0), rng.uniform(0.0, 4.0))
        temp = np.empty(length)
        cur = amb[0] + rise[0] * rng.uniform(0, 1)
        k = 1.0 - math.exp(-1.0 / tau)
        for j in range(length):
            cur += k * (amb[j] + rise[j] - cur)
            temp[j] = cur
        x = temp + rng.normal(0.0, rng.uniform(0.03, 0.4), length)
        if rng.random() < 0.3:
            x = np.round(x, 1)
        out.append({"source": f"synthetic:thermal_{i}", "part": "whole", "values": x})

        on = _duty_cycle(rng, length, rng.uniform(60, 400), rng.uniform(40, 300), 15)
        lv_on = rng.uniform(0.5, 8.0)
        lv = np.where(on, lv_on, lv_on / rng.uniform(2.0, 12.0))
        x = lv * np.exp(rng.normal(0.0, rng.uniform(0.03, 0.25), length))
        out.append({"source": f"synthetic:vibload_{i}", "part": "whole", "values": x})
    return out


def _duty_cycle(rng, length: int, mean_on: float, mean_off: float, min_dur: int) -> np.ndarray:
    on = np.zeros(length, dtype=bool)
    pos, state = 0, bool(rng.random() < 0.5)
    while pos < length:
        dur = max(min_dur, int(rng.exponential(mean_on if state else mean_off)))
        on[pos:pos + dur] = state
        pos += dur
        state = not state
    return on


def build_windows(series: list[dict], hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of all series, plus for each window the number of readings the entity had seen."""
    ws, ages = [], []
    for s in series:
        w, ends = windows_for_series(s["values"], hop=hop)
        mask = s.get("anomalous_mask")
        if mask is not None and mask.any() and len(ends):
            idx = ends[:, None] + np.arange(-WINDOW + 1, 1)[None, :]
            keep = ~mask[idx].any(axis=1)
            w, ends = w[keep], ends[keep]
        s["n_windows"] = int(len(w))
        ws.append(w)
        ages.append(ends + 1)
    return np.concatenate(ws, axis=0), np.concatenate(ages)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def build_model(keras):
    inp = keras.Input(shape=(WINDOW,), dtype="float32", name="z")
    h = keras.layers.Dense(16, activation="relu", name="enc1")(inp)
    h = keras.layers.Dense(8, activation="relu", name="code")(h)
    h = keras.layers.Dense(16, activation="relu", name="dec1")(h)
    out = keras.layers.Dense(WINDOW, activation=None, name="recon")(h)
    return keras.Model(inp, out, name="univariate_ae")


def convert_int8(tf, model, rep_windows: np.ndarray, width: int = WINDOW) -> bytes:
    """int8 conversion with per-tensor dense quantization (also used by train_skab.py, whose
    input is `width` = window x channels floats)."""
    with tempfile.TemporaryDirectory() as d:
        sm = os.path.join(d, "saved_model")
        model.export(sm, format="tf_saved_model",
                     input_signature=[tf.TensorSpec([None, width], tf.float32)], verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(sm)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]

        def rep():
            for w in rep_windows:
                yield [w[None, :].astype(np.float32)]

        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # float32 input/output (defaults): QUANTIZE at the start, DEQUANTIZE at the end.
        conv.inference_input_type = tf.float32
        conv.inference_output_type = tf.float32
        # The TF Lite 2.6.0 C runtime outputs all zeros for per-channel FULLY_CONNECTED weights
        # (see ../shared/notes/tflite.md). Force per-tensor dense quantization.
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
        return conv.convert()


class TFLiteRunner:
    def __init__(self, tf, model_path: Path, width: int = WINDOW):
        self.width = width
        self.interp = tf.lite.Interpreter(model_path=str(model_path), num_threads=1)
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.batch = None

    def __call__(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        res = []
        for i in range(0, len(x), chunk):
            xb = np.ascontiguousarray(x[i:i + chunk], dtype=np.float32)
            if self.batch != len(xb):
                self.interp.resize_tensor_input(self.inp["index"], [len(xb), self.width])
                self.interp.allocate_tensors()
                self.batch = len(xb)
            self.interp.set_tensor(self.inp["index"], xb)
            self.interp.invoke()
            res.append(self.interp.get_tensor(self.out["index"]).copy())
        return np.concatenate(res, axis=0)


def output_quant_step(interp) -> float:
    """Scale of the int8 tensor feeding the final DEQUANTIZE (one output quantization step)."""
    out_idx = interp.get_output_details()[0]["index"]
    ops = interp._get_ops_details()
    for op in ops:
        if out_idx in list(op["outputs"]) and op["op_name"] == "DEQUANTIZE":
            src = op["inputs"][0]
            for t in interp.get_tensor_details():
                if t["index"] == src:
                    return float(t["quantization"][0])
    raise RuntimeError("could not find the output DEQUANTIZE op")


def _int8_io_quant(interp) -> dict:
    """(scale, zero_point) of the int8 tensors right after QUANTIZE and before DEQUANTIZE."""
    ops = interp._get_ops_details()
    tens = {t["index"]: t for t in interp.get_tensor_details()}
    q = [op for op in ops if op["op_name"] == "QUANTIZE"][0]["outputs"][0]
    d = [op for op in ops if op["op_name"] == "DEQUANTIZE"][-1]["inputs"][0]
    res = {}
    for name, i in [("input_int8", q), ("output_int8", d)]:
        sc, zp = tens[i]["quantization"]
        res[name] = {"scale": float(sc), "zero_point": int(zp),
                     "range": [float((-128 - zp) * sc), float((127 - zp) * sc)]}
    return res


def model_op_summary(interp) -> list[str]:
    return [op["op_name"] for op in interp._get_ops_details()]


# ----------------------------------------------------------------------------------------------
# Scoring helpers (manifest `topk_mse_ratio`)
# ----------------------------------------------------------------------------------------------
def errors(z: np.ndarray, recon: np.ndarray, k: int | None = None) -> np.ndarray:
    """`topk_mse_ratio` error: mean of the k largest squared per-slot errors."""
    k = TOPK if k is None else k
    se = (z.astype(np.float64) - recon.astype(np.float64)) ** 2
    return np.mean(-np.sort(-se, axis=1)[:, :k], axis=1)


def score(err: np.ndarray, error_scale: float) -> np.ndarray:
    return err / (err + error_scale)


def hist(values: np.ndarray, edges: list[float]) -> dict:
    """Fixed-bin histogram; values outside the edges are counted in the first/last bin."""
    e = np.asarray(edges, dtype=np.float64)
    v = np.clip(np.asarray(values, dtype=np.float64), e[0], e[-1])
    counts, _ = np.histogram(v, bins=e)
    return {"bin_edges": [float(x) for x in edges], "counts": [int(c) for c in counts],
            "total": int(len(values)), "note": "values outside the edges are counted in the end bins"}


def quantiles(err: np.ndarray) -> dict:
    qs = [0.5, 0.9, 0.95, 0.99, 0.999, 0.9999]
    d = {f"p{str(q * 100).rstrip('0').rstrip('.')}": float(np.quantile(err, q)) for q in qs}
    d["max"] = float(err.max())
    d["mean"] = float(err.mean())
    return d


# ----------------------------------------------------------------------------------------------
# Injected anomalies, evaluated the way the agent sees them (streaming normalisation)
# ----------------------------------------------------------------------------------------------
def inject_and_score(run, series: list[dict], error_scale: float, rng: np.random.Generator) -> dict:
    """For held-out series: inject an anomaly at a random time after warmup, run the streaming
    normalisation, and take the max score over the windows covering the anomaly onset."""
    kinds = {
        "spike_+6sd": lambda x, t0, sd: _add(x, t0, t0 + 1, 6 * sd),
        "spike_-6sd": lambda x, t0, sd: _add(x, t0, t0 + 1, -6 * sd),
        "spike_+3sd": lambda x, t0, sd: _add(x, t0, t0 + 1, 3 * sd),
        "level_shift_+3sd": lambda x, t0, sd: _add(x, t0, len(x), 3 * sd),
        "level_shift_+1sd": lambda x, t0, sd: _add(x, t0, len(x), 1 * sd),
        "stuck_value": lambda x, t0, sd: _set(x, t0, t0 + 64, x[t0]),
        "noise_x4_64": lambda x, t0, sd: _noise(x, t0, t0 + 64, 4 * sd, rng),
    }
    res = {}
    for kind, fn in kinds.items():
        peaks = []
        for s in series:
            x = s["values"].astype(np.float64)
            if len(x) < 300:
                continue
            t0 = int(rng.integers(200, len(x) - 80))
            # "sd" = the entity's noise std just before the anomaly, i.e. one z-unit as the agent
            # sees it (not the raw noise level, which is much smaller for drifting signals)
            sd = max(math.sqrt(noise_var_series(x[:t0])[-1]), MIN_STD)
            y = fn(x.copy(), t0, sd)
            ends = np.arange(t0, min(t0 + WINDOW, len(y)))
            w, _ = windows_for_series(y, ends=ends)
            if len(w) == 0:
                continue
            s_ = score(errors(w, run(w)), error_scale)
            peaks.append(float(s_.max()))
        peaks = np.asarray(peaks)
        res[kind] = {"n_series": int(len(peaks)), "peak_score_median": float(np.median(peaks)),
                     "peak_score_p10": float(np.quantile(peaks, 0.1)),
                     "peak_score_min": float(peaks.min())}
    return res


def _add(x, a, b, v):
    x[a:b] += v
    return x


def _set(x, a, b, v):
    x[a:b] = v
    return x


def _noise(x, a, b, sd, rng):
    x[a:b] += rng.normal(0, sd, b - a)
    return x


# ----------------------------------------------------------------------------------------------
def deterministic_tensorflow(seed: int):
    """Imports TensorFlow and Keras single-threaded, seeded, with op determinism on (also used by
    train_skab.py); returns (tf, keras)."""
    import tensorflow as tf
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return tf, keras


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nab", default=str(REPO_ROOT.parent / "shared" / "data" / "nab"),
                    help="NAB root (default: ../shared/data/nab relative to the repo root)")
    ap.add_argument("--out", default=str(MODELS_DIR / NAME / VERSION))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hop", type=int, default=2, help="hop between training windows")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()

    t_start = time.time()
    tf, keras = deterministic_tensorflow(args.seed)
    rng = np.random.default_rng(args.seed)

    nab_dir = Path(args.nab)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    # ---- data ----
    nab = nab_series(nab_dir)
    synth = synthetic_series(rng, n_each=12, length=4000)
    all_series = nab + synth
    # Hold out ~25 % of the series (whole entities), stratified: every 4th after a seeded shuffle
    # within each group, so held-out windows come from entities the model never saw.
    groups: dict[str, list[dict]] = {}
    for s in all_series:
        g = s["source"].split("/")[0] if s["source"].startswith("nab:") else s["source"].rsplit("_", 1)[0]
        groups.setdefault(g, []).append(s)
    train_s, held_s = [], []
    for g in sorted(groups):
        members = groups[g]
        perm = rng.permutation(len(members))
        for j, k in enumerate(perm):
            (held_s if j % 4 == 1 else train_s).append(members[k])
    x_train, _ = build_windows(train_s, hop=args.hop)
    x_held, age_held = build_windows(held_s, hop=1)
    x_train = x_train[rng.permutation(len(x_train))]
    n_val = len(x_train) // 10
    x_val, x_fit = x_train[:n_val], x_train[n_val:]
    print(f"series: train {len(train_s)}, held-out {len(held_s)}; windows: fit {len(x_fit)}, "
          f"val {len(x_val)}, held-out {len(x_held)}", flush=True)

    # ---- train ----
    model = build_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    t_fit = time.time()
    hist_ = model.fit(x_fit, x_fit, validation_data=(x_val, x_val), epochs=args.epochs,
                      batch_size=256, shuffle=True, verbose=2)
    fit_seconds = time.time() - t_fit

    # ---- convert ----
    # 180 random training windows + the 10 with the highest and the 10 with the lowest value, so
    # that the calibrated int8 ranges cover the whole clipped z range [-8, 8] instead of
    # saturating (with random windows only, the input range came out as about [-3.2, 7]).
    rep_idx = rng.choice(len(x_fit), size=180, replace=False)
    hi = np.argsort(-x_fit.max(axis=1), kind="stable")[:10]
    lo = np.argsort(x_fit.min(axis=1), kind="stable")[:10]
    rep_windows = np.concatenate([x_fit[np.sort(rep_idx)], x_fit[hi], x_fit[lo]])
    tfl = convert_int8(tf, model, rep_windows)
    model_path = out_dir / "model.tflite"
    model_path.write_bytes(tfl)
    sha = hashlib.sha256(tfl).hexdigest()
    print(f"model.tflite: {len(tfl)} bytes, sha256 {sha}", flush=True)
    if len(tfl) > 10 * 1024:
        raise SystemExit(f"model too large: {len(tfl)} bytes > 10 KB")

    run = TFLiteRunner(tf, model_path)
    q_step = output_quant_step(run.interp)
    ops = model_op_summary(run.interp)
    tensor_types = sorted({str(np.dtype(t["dtype"])) for t in run.interp.get_tensor_details()})

    # ---- sanity: per-tensor quantization only (the TF Lite 2.6.0 FULLY_CONNECTED trap: the
    # Python interpreter runs per-channel weights fine, so a non-zero output here is not enough)
    for t in run.interp.get_tensor_details():
        scales = t["quantization_parameters"]["scales"]
        if len(scales) > 1:
            raise SystemExit(f"per-channel quantized tensor {t['name']} ({len(scales)} scales)")

    # ---- sanity: not all zeros, close to Keras ----
    rec_held = run(x_held)
    if not np.any(np.abs(rec_held) > 0):
        raise SystemExit("TFLite outputs are all zeros: per-channel dense quantization trap")
    keras_held = model.predict(x_held, batch_size=4096, verbose=0)
    tfl_vs_keras = float(np.max(np.abs(rec_held - keras_held)))
    tfl_vs_keras_p99 = float(np.quantile(np.abs(rec_held - keras_held), 0.99))
    print(f"TFLite vs Keras on held-out: max |diff| {tfl_vs_keras:.4f}, p99 {tfl_vs_keras_p99:.4f}",
          flush=True)

    # ---- calibration on held-out normal windows, with the TFLite outputs ----
    err_held = errors(x_held, rec_held)
    err_keras = errors(x_held, keras_held)
    error_scale = float(np.quantile(err_held, ERROR_SCALE_QUANTILE))
    sc_held = score(err_held, error_scale)
    # alert: the score of the held-out (1 - 1e-4) error quantile, rounded up to 0.01, so that
    # the held-out false-alert rate is <= 0.01 %.
    q_alert_err = float(np.quantile(err_held, 1.0 - ALERT_MAX_FALSE_RATE))
    alert = math.ceil(float(score(np.array([q_alert_err]), error_scale)[0]) * 100 - 1e-9) / 100
    alert = min(max(alert, REVIEW + 0.05), 0.99)
    false_alert_rate = float(np.mean(sc_held >= alert))
    false_review_rate = float(np.mean(sc_held >= REVIEW))
    alert_error = alert * error_scale / (1 - alert)  # error at which score == alert
    print(f"error_scale {error_scale:.5f}; alert {alert} (error {alert_error:.4f}); held-out "
          f"review rate {false_review_rate:.5f}, alert rate {false_alert_rate:.6f}", flush=True)
    if false_alert_rate > ALERT_MAX_FALSE_RATE:
        print(f"WARNING: held-out false-alert rate {false_alert_rate} above target "
              f"{ALERT_MAX_FALSE_RATE} (alert capped at 0.99)", flush=True)

    # held-out error by entity age: the EWMA variance starts at 0 and after `warmup` readings
    # carries only 1 - (1 - alpha)^n of its weight, so young entities have inflated z-scores.
    by_age = []
    for lo, hi in [(WARMUP, 128), (128, 256), (256, 512), (512, 1024), (1024, 10**9)]:
        m = (age_held >= lo) & (age_held < hi)
        if m.any():
            by_age.append({"readings_seen": [lo, hi if hi < 10**9 else None], "windows": int(m.sum()),
                           "error_p50": float(np.quantile(err_held[m], 0.5)),
                           "error_p99": float(np.quantile(err_held[m], 0.99)),
                           "review_rate": float(np.mean(sc_held[m] >= REVIEW)),
                           "alert_rate": float(np.mean(sc_held[m] >= alert))})
    for b in by_age:
        print(f"age {b['readings_seen']}: {b['windows']} windows, error p50 {b['error_p50']:.3f} "
              f"p99 {b['error_p99']:.3f}, review rate {b['review_rate']:.4f}", flush=True)

    # per-source held-out breakdown (which entities produce the tail)
    per_source = []
    off = 0
    for s in held_s:
        n = s["n_windows"]
        if n:
            e = err_held[off:off + n]
            per_source.append({"source": s["source"], "windows": n,
                               "error_p99": float(np.quantile(e, 0.99)), "error_max": float(e.max()),
                               "review_rate": float(np.mean(sc_held[off:off + n] >= REVIEW)),
                               "alert_rate": float(np.mean(sc_held[off:off + n] >= alert))})
        off += n

    # ---- injected anomalies (streaming, held-out series) ----
    inj_rng = np.random.default_rng(args.seed + 1)
    injected = inject_and_score(run, held_s, error_scale, inj_rng)
    for k, v in injected.items():
        print(f"injected {k:18s} peak score median {v['peak_score_median']:.3f} "
              f"p10 {v['peak_score_p10']:.3f} min {v['peak_score_min']:.3f}", flush=True)

    # ---- golden ----
    g_rng = np.random.default_rng(args.seed + 2)
    normal_idx = np.sort(g_rng.choice(len(x_held), size=10, replace=False))
    golden_in = [x_held[i].copy() for i in normal_idx]
    golden_desc = [f"held-out normal window #{int(i)}" for i in normal_idx]
    base = x_held[normal_idx[0]].copy()
    sp = base.copy(); sp[20] = CLIP
    golden_in.append(sp); golden_desc.append("normal window with a +8 (clip) spike at t=20")
    sp2 = base.copy(); sp2[31] = -6.0
    golden_in.append(sp2); golden_desc.append("normal window with a -6 spike at the last reading")
    ls = base.copy(); ls[20:] += 4.0; ls = np.clip(ls, -CLIP, CLIP)
    golden_in.append(ls); golden_desc.append("normal window with a +4 level shift from t=20")
    golden_in.append(np.zeros(WINDOW, np.float32)); golden_desc.append("all zeros")
    golden_in.append(np.full(WINDOW, CLIP, np.float32)); golden_desc.append("all +8 (clip)")
    golden_in.append(np.linspace(-2, 2, WINDOW).astype(np.float32)); golden_desc.append("ramp -2..2")
    g_in = np.stack(golden_in).astype(np.float32)
    g_out = run(g_in)
    # the same file must give identical results at batch 1 (dynamic batch dimension)
    one = TFLiteRunner(tf, model_path)
    g_out1 = np.concatenate([one(g_in[i:i + 1]) for i in range(len(g_in))])
    batch_consistent = bool(np.array_equal(g_out, g_out1))
    g_err = errors(g_in, g_out)
    g_score = score(g_err, error_scale)
    for d, e, s_ in zip(golden_desc, g_err, g_score):
        print(f"golden  {d:55s} error {e:9.4f} score {s_:.3f}", flush=True)
    # sanity: a +8 spike in a normal window must reach the review band and sit far above both
    # its own base window and the bulk of held-out normal windows.
    base_score, spike_score = float(g_score[0]), float(g_score[10])
    held_p90 = float(np.quantile(sc_held, 0.9))
    if not (spike_score >= REVIEW and spike_score > base_score + 0.3 and spike_score > held_p90 + 0.1):
        raise SystemExit(f"sanity: spike score {spike_score:.3f} vs base {base_score:.3f}, "
                         f"held-out p90 {held_p90:.3f}")
    if spike_score < REVIEW:
        raise SystemExit("sanity: a +8 spike does not reach review")
    tolerance = float(3 * q_step)
    golden = {
        "inputs": [[float(v) for v in row] for row in g_in],
        "outputs": [[float(v) for v in row] for row in g_out],
        "tolerance": tolerance,
        "descriptions": golden_desc,
        "errors": [float(e) for e in g_err],
        "scores": [float(s_) for s_ in g_score],
        "note": "outputs from tf.lite.Interpreter (TensorFlow %s) on model.tflite; tolerance = 3 "
                "output quantization steps (step %.6g)" % (tf.__version__, q_step),
    }
    (out_dir / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")

    # ---- manifest ----
    total_seconds = time.time() - t_start

    def series_summary(ss):
        by = {}
        for s in ss:
            key = s["source"].split(":")[0] + ":" + s.get("part", "whole")
            b = by.setdefault(key, {"series": 0, "readings": 0, "windows": 0})
            b["series"] += 1
            b["readings"] += int(len(s["values"]))
            b["windows"] += int(s["n_windows"])
        return by

    training = {
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "script": "models/train_univariate.py",
        "seed": args.seed,
        "data": {
            "nab": "numenta/NAB ea702d7 (MIT), read from ../shared/data/nab: artificialNoAnomaly/* "
                   "whole + probation part (first 15 %, max 750 rows) of every other file; windows "
                   "touching labelled anomaly windows dropped",
            "synthetic": "12 each of thermal (1 Hz first-order lag following an on/off duty cycle + "
                         "noise), load-dependent vibration (duty-cycle levels, log-normal noise), "
                         "temperature (drift + cycle + noise), vibration (noisy positive, "
                         "load levels), motor current (duty-cycle steps + noise), 4000 readings each",
            "split": "whole series held out: every 4th series of each group (NAB category / "
                     "synthetic kind) after a seeded shuffle",
            "train_summary": series_summary(train_s),
            "held_out_summary": series_summary(held_s),
            "held_out_series": [s["source"] for s in held_s],
            "window": WINDOW, "train_hop": args.hop, "held_out_hop": 1,
            "windows": {"fit": int(len(x_fit)), "validation": int(len(x_val)),
                        "held_out": int(len(x_held)), "representative": int(len(rep_windows))},
            "normalisation": "entity_noise_zscore exactly as the manifest (float64), warmup "
                             "windows skipped (first window at reading %d)" % max(WARMUP, WINDOW),
        },
        "model": {
            "architecture": "dense autoencoder 32-16(relu)-8(relu)-16(relu)-32(linear)",
            "params": int(model.count_params()),
            "optimizer": "Adam lr 2e-3, mse, batch 256",
            "epochs": args.epochs,
            "final_loss": float(hist_.history["loss"][-1]),
            "final_val_loss": float(hist_.history["val_loss"][-1]),
            "quantization": "int8 weights/activations (per-tensor dense), float32 input/output, "
                            "Optimize.DEFAULT, TFLITE_BUILTINS_INT8, 200 representative windows (180 random "
                            "+ 20 with the most extreme values), "
                            "_experimental_disable_per_channel_quantization_for_dense_layers",
            "tflite_ops": ops,
            "tflite_tensor_dtypes": tensor_types,
            "file_bytes": len(tfl),
            "output_quant_step": q_step,
            "tflite_vs_keras_max_abs_diff_held_out": tfl_vs_keras,
            "tflite_vs_keras_p99_abs_diff_held_out": tfl_vs_keras_p99,
            "int8_io_quantization": _int8_io_quant(run.interp),
            "batch1_equals_batch16": batch_consistent,
        },
        "calibration": {
            "on": "held-out normal windows, TFLite interpreter outputs",
            "error_scale": "p99 of held-out error, so score(p99) = 0.5 = review",
            "alert": "score of the held-out p99.99 error rounded up to 0.01 (held-out false-alert "
                     "rate <= 1e-4)",
            "held_out_error_quantiles": quantiles(err_held),
            "held_out_error_quantiles_keras_float": quantiles(err_keras),
            "held_out_score_quantiles": quantiles(sc_held),
            "alert_error_equivalent": alert_error,
            "held_out_review_rate": false_review_rate,
            "held_out_alert_rate": false_alert_rate,
            "held_out_by_entity_age": by_age,
            "held_out_per_series": per_source,
        },
        "injected_anomalies": {
            "method": "one anomaly injected at a random reading (>= 200) of each held-out series, "
                      "streamed through entity_noise_zscore; peak score over the 32 windows covering "
                      "the onset; sd = the entity's noise std at the onset (noise_var, before the window floor)",
            "results": injected,
        },
        "feature_distributions": {
            "input_z_train": hist(x_fit.ravel(), Z_BIN_EDGES),
            "input_z_held_out": hist(x_held.ravel(), Z_BIN_EDGES),
            "score_held_out": hist(sc_held, SCORE_BIN_EDGES),
            "log10_error_held_out": hist(np.log10(np.maximum(err_held, 1e-12)), LOG10_ERROR_BIN_EDGES),
        },
        "timing_seconds": {"fit": round(fit_seconds, 1), "total": round(total_seconds, 1)},
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
    }
    manifest = {
        "schema": 1,
        "name": NAME,
        "version": VERSION,
        "kind": "univariate",
        "file": "model.tflite",
        "sha256": sha,
        "input": {"window": WINDOW, "channels": ["value"], "dtype": "float32"},
        "output": {"kind": "reconstruction", "dtype": "float32"},
        "normalisation": {"method": "entity_noise_zscore", "alpha": ALPHA, "min_std": MIN_STD,
                          "clip": CLIP, "warmup": WARMUP, "window_std_ratio": WINDOW_STD_RATIO},
        "score": {"method": "topk_mse_ratio", "k": TOPK, "error_scale": error_scale},
        "thresholds": {"review": REVIEW, "alert": alert},
        "training": training,
        "golden": "golden.json",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out_dir} in {total_seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
