"""Leave-files-out study of a *tracking* asset baseline for `skab-ae` (model card, third round).

Not part of the build and not shipped: it reproduces the card's "third round" numbers.

What it computes, per SKAB `valve1` file, as the agent's replay does (`vigil eval skab`):
* baseline = mean / population std of each channel's first 400 rows (SKAB's training part);
* the window that row `r` closes = rows `r-16 .. r-1` (1 Hz, 16 slots × 8 channels,
  time-major), `z = clip((x - mean) / max(std, 0.01·|mean|, 0.001), ±8)` (the manifest's
  `asset_warmup_zscore`), error = mean squared reconstruction error of `model.tflite`,
  score = error / (error + error_scale); row `r` is detected when its score ≥ `thr`
  (`config/skab.toml`: 0.5, raise after 1, clear after 1);
* point-wise F1 / FAR / MAR on rows ≥ 400, pooled over the even-numbered files (used to
  choose), the odd-numbered files (held out) and all 16.
It does not resample timestamp gaps onto the 1 s grid as the agent does; with the frozen
baseline it gives all-files 0.775 / 12.0 % / 30.1 % against the agent's 0.776 / 11.9 / 30.1.

Tracking (`tau` set): after the window of row `r` is scored, its newest reading (row `r-1`, or
row `r-1-delay`) moves each channel's mean by `(x - mean) / tau` when the gate passes:
* `gate=("score",)`: the window's score < `score_gate` (with `delay`: no window since that
  reading scored ≥ `score_gate`);
* `("zall", g)` / `("zchan", g)`: the window-mean |z| of every channel / of that channel < g;
* `("znew", g)`: the new reading's |z| < g; `("none",)`: always.
`huber=k` clamps each step to ±k·scale; `std_tau` also tracks the variance (floored at
`std_floor` × the warm-up std).

Usage (models/.venv, see models/build.sh):
    models/.venv/bin/python models/skab_baseline_study.py --skab ../shared/data/skab \
        "dict()" "dict(tau=150, gate=('score',), score_gate=0.5)"
Each argument is a Python dict of the options above (plus `thr`); add `--even-only` while
choosing. `--anomaly-free` instead scores held-out `anomaly-free.csv` blocks (rows 7053 on,
every 50 rows: a 400-row warm-up, then 750 rows) and prints the review / alert rates.
"""
import argparse
import csv
import json
import os

import numpy as np
import tensorflow as tf

W, C, WARM = 16, 8, 400


class Model:
    def __init__(self, model_dir):
        man = json.load(open(os.path.join(model_dir, "manifest.json")))
        self.scale = man["score"]["error_scale"]
        self.it = tf.lite.Interpreter(model_path=os.path.join(model_dir, "model.tflite"))
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.out = self.it.get_output_details()[0]["index"]

    def score(self, z):
        self.it.set_tensor(self.inp, z.reshape(1, -1).astype(np.float32))
        self.it.invoke()
        e = float(np.mean((z - self.it.get_tensor(self.out)[0]) ** 2))
        return e / (e + self.scale)


def read(path, labelled=True):
    rows = [r for r in csv.reader(open(path), delimiter=";")][1:]
    rows = [r for r in rows if r]
    x = np.array([[float(v) for v in r[1:9]] for r in rows])
    lab = np.array([float(r[9]) == 1.0 for r in rows]) if labelled else None
    return x, lab


def scale_of(mean, std):
    return np.maximum(np.maximum(std, 0.01 * np.abs(mean)), 0.001)


def scores(model, x, tau=None, gate=("none",), score_gate=0.5, delay=0, huber=None, std_tau=None, std_floor=None):
    mean, var = x[:WARM].mean(0), x[:WARM].var(0)
    std0 = np.sqrt(var)
    out = np.zeros(len(x))
    last_high = -(10**9)
    for r in range(WARM, len(x)):
        sc = scale_of(mean, np.sqrt(var) if std_tau else std0)
        zw = np.clip((x[r - W:r] - mean) / sc, -8, 8)
        s = out[r] = model.score(zw.reshape(-1))
        if tau is None:
            continue
        if s >= score_gate:
            last_high = r
        k = r - 1 - delay
        if delay and k < WARM:
            continue
        new = x[k]
        kind = gate[0]
        if kind == "score":
            ok = np.full(C, last_high < k if delay else s < score_gate)
        elif kind == "zall":
            ok = np.full(C, np.max(np.abs(zw.mean(0))) < gate[1])
        elif kind == "zchan":
            ok = np.abs(zw.mean(0)) < gate[1]
        elif kind == "znew":
            ok = np.abs((new - mean) / sc) < gate[1]
        else:
            ok = np.full(C, True)
        d = new - mean
        if huber is not None:
            d = np.clip(d, -huber * sc, huber * sc)
        mean = np.where(ok, mean + d / tau, mean)
        if std_tau:
            nv = (1 - 1 / std_tau) * var + d * d / std_tau
            if std_floor is not None:
                nv = np.maximum(nv, (std_floor * std0) ** 2)
            var = np.where(ok, nv, var)
    return out


def counts(s, lab, thr):
    det, l = s[WARM:] >= thr, lab[WARM:]
    return np.array([np.sum(det & l), np.sum(det & ~l), np.sum(~det & l), np.sum(~det & ~l)])


def fmt(c):
    tp, fp, fn, tn = c
    return f"{2 * tp / max(1, 2 * tp + fp + fn):.3f} / {100 * fp / max(1, fp + tn):.1f} / {100 * fn / max(1, fn + tp):.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skab", default="../shared/data/skab")
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "skab-ae", "1.0.0"))
    ap.add_argument("--even-only", action="store_true")
    ap.add_argument("--anomaly-free", action="store_true")
    ap.add_argument("--per-file", action="store_true")
    ap.add_argument("variants", nargs="*", default=["dict()"])
    a = ap.parse_args()
    model = Model(a.model)
    for v in a.variants:
        kw = eval(v)  # a study script: the variants are the caller's own Python literals
        thr = kw.pop("thr", 0.5)
        if a.anomaly_free:
            x, _ = read(os.path.join(a.skab, "anomaly-free", "anomaly-free.csv"), labelled=False)
            s = np.concatenate([scores(model, x[st:st + WARM + 750], **kw)[WARM:] for st in range(7053, len(x) - WARM - W, 50)])
            print(f"{v}: {len(s)} windows, review {100 * np.mean(s >= 0.5):.1f} %, alert (0.70) {100 * np.mean(s >= 0.7):.1f} %", flush=True)
            continue
        files = range(0, 16, 2) if a.even_only else range(16)
        per = {}
        for i in files:
            x, lab = read(os.path.join(a.skab, "valve1", f"{i}.csv"))
            per[i] = counts(scores(model, x, **kw), lab, thr)
        even = sum(per[i] for i in files if i % 2 == 0)
        line = f"{v} thr {thr}: even {fmt(even)}"
        if not a.even_only:
            odd = sum(per[i] for i in files if i % 2 == 1)
            line += f" | odd {fmt(odd)} | all {fmt(even + odd)}"
        print(line, flush=True)
        if a.per_file:
            print("   " + " · ".join(f"{i}: {fmt(c)}" for i, c in per.items()))


if __name__ == "__main__":
    main()
