#!/usr/bin/env python3
"""Offline check of a model folder against the built-in plant simulator's labelled readings.

    cargo run -q -p vigil-agent --example sim_dump -- SEED DURATION_S > /tmp/sim.csv
    models/.venv/bin/python models/eval_demo.py /tmp/sim.csv models/univariate-ae/1.1.0 [HOP_S [ALERT_THRESHOLD]]

Streams every entity the way the agent does at 1 Hz with 32 s windows and a 4 s hop (one
reading per slot), scores with the manifest's normalisation and score, and prints for each
labelled anomaly the peak score of the windows overlapping it, plus review/alert windows
outside anomalies. For evaluation only: nothing here feeds training.
"""
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_univariate as T  # noqa: E402


def main():
    csv_path, model_dir = sys.argv[1], Path(sys.argv[2])
    hop = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    m = json.loads((model_dir / "manifest.json").read_text())
    assert m["normalisation"]["method"] == "entity_noise_zscore", m["normalisation"]
    T.WARMUP = m["normalisation"]["warmup"]
    k = m["score"].get("k", 32)
    es = m["score"]["error_scale"]
    review, alert = m["thresholds"]["review"], m["thresholds"]["alert"]
    if len(sys.argv) > 4:  # optional override of the alert threshold (what `[alerts] alert_threshold` does)
        alert = float(sys.argv[4])
    import tensorflow as tf
    run = T.TFLiteRunner(tf, model_dir / m["file"])
    series = defaultdict(list)
    labels = defaultdict(list)
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            series[row["entity"]].append(float(row["value"]))
            labels[row["entity"]].append(row["anomaly"])
    tot_windows = 0
    fa_alert_eps = fa_review_eps = 0
    fa_alert_w = fa_review_w = 0
    rows = []
    for ent in sorted(series):
        x = np.asarray(series[ent])
        lab = np.asarray(labels[ent])
        n = len(x)
        ends = np.arange(hop * (T.WINDOW // hop) - 1, n, hop)
        w, ends = T.windows_for_series(x, ends=ends)
        sc = T.score(T.errors(w, run(w), k), es)
        tot_windows += len(sc)
        lo = ends - T.WINDOW + 1
        # anomalies: contiguous runs of one label
        runs = []
        i = 0
        while i < n:
            if lab[i]:
                j = i
                while j + 1 < n and lab[j + 1] == lab[i]:
                    j += 1
                runs.append((i, j, lab[i]))
                i = j + 1
            else:
                i += 1
        near = np.zeros(len(ends), dtype=bool)
        for a, b, kind in runs:
            ov = (ends >= a) & (lo <= b)
            # allow the windows up to 32 s after the end (an anomaly's end is visible in them)
            near |= (ends >= a) & (lo <= b + T.WINDOW)
            pk = float(sc[ov].max()) if ov.any() else float("nan")
            rows.append((ent, kind, a, b - a + 1, pk, pk >= review, pk >= alert))
        for thr, name in [(alert, "alert"), (review, "review")]:
            bad = (sc >= thr) & ~near
            eps = int(np.sum(bad[1:] & ~bad[:-1]) + (1 if len(bad) and bad[0] else 0))
            if name == "alert":
                fa_alert_eps += eps
                fa_alert_w += int(bad.sum())
            else:
                fa_review_eps += eps
                fa_review_w += int(bad.sum())
    print(f"{'entity':22s} {'kind':17s} {'start_s':>7s} {'len':>4s} {'peak':>6s} review alert")
    for ent, kind, a, ln, pk, r, al in rows:
        print(f"{ent:22s} {kind:17s} {a:7d} {ln:4d} {pk:6.3f} {'Y' if r else '-':6s} {'Y' if al else '-'}")
    by = defaultdict(lambda: [0, 0, 0])
    for _, kind, _, _, _, r, al in rows:
        by[kind][0] += 1
        by[kind][1] += r
        by[kind][2] += al
    hours = len(next(iter(series.values()))) / 3600
    for kind, (c, r, al) in sorted(by.items()):
        print(f"{kind:17s} n={c:3d} review {r:3d} alert {al:3d}")
    print(f"windows {tot_windows}; outside anomalies: alert windows {fa_alert_w} ({fa_alert_eps} episodes, "
          f"{fa_alert_eps / hours:.2f}/h), review windows {fa_review_w} ({fa_review_eps} episodes, "
          f"{fa_review_eps / hours:.2f}/h); simulated hours {hours:.2f}")


if __name__ == "__main__":
    main()
