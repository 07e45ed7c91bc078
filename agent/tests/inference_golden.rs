//! Golden-vector and batching tests of the TF Lite runtime, for every model folder found under
//! `models/*/*/` (those containing a `manifest.json`).

use std::path::{Path, PathBuf};

use vigil::inference::manifest::{sha256_hex, VerifiedModel};
use vigil::inference::{mse_ratio_score, window_error, InferenceError, ModelRuntime};

fn models_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// Every `models/<name>/<version>/` folder with a manifest.
fn model_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(names) = std::fs::read_dir(models_root()) else {
        return dirs;
    };
    for name in names.flatten().filter(|e| e.path().is_dir()) {
        for ver in std::fs::read_dir(name.path()).unwrap().flatten() {
            if ver.path().join("manifest.json").is_file() {
                dirs.push(ver.path());
            }
        }
    }
    dirs.sort();
    dirs
}

fn require_models() -> Vec<PathBuf> {
    let dirs = model_dirs();
    assert!(
        !dirs.is_empty(),
        "no model folders with manifest.json under {}",
        models_root().display()
    );
    dirs
}

#[test]
fn golden_vectors_match_tensorflow() {
    for dir in require_models() {
        let (rt, report) =
            ModelRuntime::load_verified(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        eprintln!(
            "{} {}: {} windows, max |diff| {:.6} (mean {:.6}) vs tolerance {:.6}, \
             max score diff {:.6}",
            rt.name(),
            rt.version(),
            report.windows,
            report.max_abs_diff,
            report.mean_abs_diff,
            report.tolerance,
            report.max_score_diff
        );
        assert_eq!(report.windows, rt.golden().inputs.len());
        assert_eq!(report.elements, report.windows * rt.input_width());
        assert!(report.max_abs_diff <= report.tolerance);
        // The outputs must not be degenerate (all zeros is the known silent failure mode).
        let mut out = Vec::new();
        let mut rt = rt;
        let flat = rt.golden().flat_inputs();
        rt.run_batch(&flat, rt.golden().inputs.len(), &mut out)
            .unwrap();
        assert!(
            out.iter().any(|v| v.abs() > 1e-3),
            "{}: all-zero outputs",
            dir.display()
        );
    }
}

#[test]
fn scoring_matches_the_model_pipeline() {
    // golden.json may carry errors/scores computed by the Python pipeline from its own outputs;
    // our pure scoring functions must reproduce them.
    for dir in require_models() {
        let m = VerifiedModel::load(&dir).unwrap();
        let scale = m.manifest.score.error_scale;
        let g = &m.golden;
        let (Some(errors), Some(scores)) = (&g.errors, &g.scores) else {
            eprintln!(
                "{}: golden.json has no errors/scores, skipped",
                dir.display()
            );
            continue;
        };
        for (i, (x, y)) in g.inputs.iter().zip(&g.outputs).enumerate() {
            let e = window_error(&m.manifest.score, x, y);
            assert!(
                (e - errors[i]).abs() <= 1e-5 * errors[i].max(1.0),
                "window {i}: {e} vs {}",
                errors[i]
            );
            let s = mse_ratio_score(e, scale);
            assert!(
                (s - scores[i]).abs() <= 1e-6,
                "window {i}: {s} vs {}",
                scores[i]
            );
        }
    }
}

#[test]
fn batch_sizes_give_identical_per_window_outputs() {
    for dir in require_models() {
        let mut rt = ModelRuntime::load(&dir).unwrap();
        let w = rt.input_width();
        // 32 distinct windows: the golden inputs, cycled and perturbed so no two are equal.
        let golden = rt.golden().inputs.clone();
        let windows: Vec<Vec<f32>> = (0..32)
            .map(|i| {
                let base = &golden[i % golden.len()];
                base.iter()
                    .enumerate()
                    .map(|(j, v)| (v + 0.05 * ((i * 7 + j) % 11) as f32 - 0.25).clamp(-8.0, 8.0))
                    .collect()
            })
            .collect();

        // Reference: one window at a time.
        let mut reference = Vec::new();
        let mut out = Vec::new();
        for win in &windows {
            rt.run_batch(win, 1, &mut out).unwrap();
            assert_eq!(out.len(), w);
            reference.push(out.clone());
        }
        assert_eq!(rt.allocated_batch(), 1);
        // Distinct inputs give distinct outputs somewhere (else the comparison proves nothing).
        assert!(reference.iter().any(|r| r != &reference[0]));

        for n in [7usize, 32, 1, 7] {
            for start in (0..windows.len()).step_by(n) {
                let end = (start + n).min(windows.len());
                if end - start != n {
                    continue;
                }
                let flat: Vec<f32> = windows[start..end].iter().flatten().copied().collect();
                rt.run_batch(&flat, n, &mut out).unwrap();
                assert_eq!(rt.allocated_batch(), n);
                assert_eq!(out.len(), n * w);
                for k in 0..n {
                    assert_eq!(
                        &out[k * w..(k + 1) * w],
                        &reference[start + k][..],
                        "{}: batch {n}, window {}",
                        dir.display(),
                        start + k
                    );
                }
            }
        }
    }
}

#[test]
fn run_batch_rejects_inconsistent_arguments() {
    let dir = &require_models()[0];
    let mut rt = ModelRuntime::load(dir).unwrap();
    let w = rt.input_width();
    let mut out = vec![1.0];
    let err = rt
        .run_batch(&vec![0.0; w * 2 - 1], 2, &mut out)
        .unwrap_err();
    assert!(matches!(err, InferenceError::BadBatch { .. }), "{err}");
    assert!(out.is_empty());
    rt.run_batch(&[], 0, &mut out).unwrap();
    assert!(out.is_empty());
    // Still usable afterwards.
    rt.run_batch(&vec![0.0; w * 3], 3, &mut out).unwrap();
    assert_eq!(out.len(), 3 * w);
}

/// Copies a model folder into a temp dir so it can be modified.
fn copy_model(dir: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
        }
    }
    tmp
}

#[test]
fn tampered_model_file_is_refused() {
    let dir = &require_models()[0];
    let tmp = copy_model(dir);
    let m = VerifiedModel::load(tmp.path()).unwrap();
    let model_path = tmp.path().join(&m.manifest.file);
    let mut bytes = std::fs::read(&model_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&model_path, &bytes).unwrap();

    let err = ModelRuntime::load(tmp.path()).unwrap_err();
    match &err {
        InferenceError::ChecksumMismatch {
            path,
            expected,
            actual,
        } => {
            assert_eq!(path, &model_path);
            assert_eq!(expected, &m.manifest.sha256);
            assert_eq!(actual, &sha256_hex(&bytes));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("sha256 mismatch") && msg.contains(&m.manifest.sha256),
        "{msg}"
    );
}

#[test]
fn tampered_manifest_sha256_is_refused() {
    let dir = &require_models()[0];
    let tmp = copy_model(dir);
    let path = tmp.path().join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let real = v["sha256"].as_str().unwrap().to_string();
    let mut fake: Vec<u8> = real.clone().into_bytes();
    fake[0] = if fake[0] == b'0' { b'1' } else { b'0' };
    let fake = String::from_utf8(fake).unwrap();
    v["sha256"] = fake.clone().into();
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();

    let err = ModelRuntime::load(tmp.path()).unwrap_err();
    let InferenceError::ChecksumMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("expected ChecksumMismatch, got {err:?}");
    };
    assert_eq!(expected, &fake);
    assert_eq!(actual, &real);
}

#[test]
fn golden_mismatch_is_reported() {
    // Corrupt one expected output element beyond tolerance: verify_golden must fail and say
    // where.
    let dir = &require_models()[0];
    let tmp = copy_model(dir);
    let m = VerifiedModel::load(tmp.path()).unwrap();
    let gpath = tmp.path().join(&m.manifest.golden);
    let mut g: serde_json::Value = serde_json::from_slice(&std::fs::read(&gpath).unwrap()).unwrap();
    let tol = g["tolerance"].as_f64().unwrap();
    let v = g["outputs"][1][5].as_f64().unwrap();
    g["outputs"][1][5] = (v + 10.0 * tol + 0.5).into();
    std::fs::write(&gpath, serde_json::to_vec(&g).unwrap()).unwrap();

    let mut rt = ModelRuntime::load(tmp.path()).unwrap();
    let err = rt.verify_golden().unwrap_err();
    match err {
        InferenceError::GoldenMismatch {
            window,
            element,
            max_abs_diff,
            tolerance,
            ..
        } => {
            assert_eq!((window, element), (1, 5));
            assert!(max_abs_diff > tolerance);
        }
        other => panic!("expected GoldenMismatch, got {other:?}"),
    }
}

#[test]
fn runtime_moves_to_a_dedicated_thread() {
    let dir = require_models()[0].clone();
    let mut rt = ModelRuntime::load(&dir).unwrap();
    let w = rt.input_width();
    let mut here = Vec::new();
    rt.run_batch(&vec![0.5; w], 1, &mut here).unwrap();
    let there = std::thread::spawn(move || {
        let mut out = Vec::new();
        rt.run_batch(&vec![0.5; w], 1, &mut out).unwrap();
        out
    })
    .join()
    .unwrap();
    assert_eq!(here, there);
}

/// A multivariate model's `golden.json` may carry a raw `stream` (rows of its channels at 1 Hz and
/// the score the Python pipeline computed for each row from the warm-up on). Replaying it through
/// the agent's live code path (`vigil::replay`: asset join, warm-up baseline, normalisation,
/// TF Lite, scoring) must give the same scores: no training/serving skew.
#[test]
fn raw_streams_replay_to_the_pipelines_scores() {
    let mut checked = 0;
    for dir in require_models() {
        let text = std::fs::read_to_string(dir.join("golden.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let Some(stream) = v.get("stream") else { continue };
        let channels: Vec<String> = stream["channels"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        let t0 = stream["first_timestamp_ms"].as_i64().unwrap();
        let first = stream["first_scored_row"].as_u64().unwrap() as usize;
        let expected: Vec<f64> = stream["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        let tolerance = stream["score_tolerance"].as_f64().unwrap();
        let mut csv = format!("timestamp;{}\n", channels.join(";"));
        for (i, row) in stream["rows"].as_array().unwrap().iter().enumerate() {
            let cells: Vec<String> = row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap().to_string()).collect();
            csv.push_str(&format!("{};{}\n", t0 + i as i64 * 1000, cells.join(";")));
        }
        let list = channels.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
        let toml = format!(
            "[agent]\nid = \"golden\"\ndata_dir = \"/nonexistent\"\n[ingest.simulator]\nmachines = 1\n[[pipeline.assets]]\nid = \"a\"\nchannels = [{list}]\n[inference]\nmodel_dir = {:?}\n",
            dir.display().to_string()
        );
        let config = vigil::config::Config::from_toml(&toml, Path::new("golden.toml"), |_| None).unwrap();
        let mut replayer = vigil::replay::Replayer::new(&config).unwrap();
        let opts = vigil::replay::ReplayOptions { separator: b';', ..Default::default() };
        let mut scores = Vec::new();
        replayer.replay("stream", csv.as_bytes(), &opts, |r| {
            scores.push((r.band.is_some(), r.score));
            Ok(())
        }).unwrap();
        // The stream's score of row r is that of the window of rows r − window ..= r − 1; the
        // agent's windows hold the reading at their end, so that window is closed, and scored,
        // by its newest row, r − 1 (and the last row closes one more window).
        let first = first - 1;
        assert!(scores[..first].iter().all(|s| !s.0), "{}: rows before the warm-up are unscored", dir.display());
        assert!(scores[first].0, "{}: the row completing the warm-up is scored", dir.display());
        assert_eq!(scores.len() - first, expected.len() + 1);
        let worst = scores[first..].iter().zip(&expected).map(|(got, want)| (got.1 - want).abs()).fold(0.0, f64::max);
        eprintln!("{}: {} streamed rows, max |score diff| {worst:.5} (tolerance {tolerance})", dir.display(), expected.len());
        assert!(worst <= tolerance, "{}: replayed scores differ from the pipeline's by {worst}", dir.display());
        checked += 1;
    }
    assert!(checked > 0, "no model ships a raw stream");
}
