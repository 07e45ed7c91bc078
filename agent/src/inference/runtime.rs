//! [`ModelRuntime`]: one TensorFlow Lite interpreter for one verified model.
//!
//! # Threading contract
//! * The interpreter (of either [`backend`](super::backend)) is `Send` but not `Sync`: it
//!   mutates native state. Tensors never leave the backend module.
//! * [`ModelRuntime`] is therefore `Send` and `!Sync`, and every method that touches the
//!   interpreter takes `&mut self`. It may be created on any thread (e.g. while loading
//!   configuration) and then moved to the dedicated inference thread.
//! * It is used from **one dedicated OS thread** (`std::thread::spawn`), never on tokio's
//!   worker threads and never via `spawn_blocking` per call: `invoke` is blocking CPU work
//!   (µs to ms) that would stall the async reactor. Async code talks to that thread over
//!   channels.
//! * The interpreter runs with 1 thread and no XNNPACK delegate, so it never spawns threads
//!   of its own and results are deterministic for a given batch.
//!
//! # Batching
//! [`ModelRuntime::run_batch`] runs `n` windows in one `invoke` (the `tflite-c` backend; the
//! `tflite-vendored` one invokes per window). The input tensor's batch dimension is resized
//! (and tensors re-allocated) only when `n` differs from the previous call, so a caller that
//! mostly uses one batch size pays the allocation once.

use std::path::{Path, PathBuf};

use super::backend::{self, Engine, Failure};
use super::manifest::{Golden, Manifest, ScoreMethod, ScoreSpec, VerifiedModel};
use super::InferenceError;

/// Largest batch accepted by [`ModelRuntime::run_batch`] (guards against absurd allocations).
pub const MAX_BATCH: usize = 4096;

/// Mean squared reconstruction error of one window: `mean((z - reconstruction)^2)`.
///
/// Returns NaN for empty or mismatched slices, or if any value is NaN.
pub fn reconstruction_mse(z: &[f32], reconstruction: &[f32]) -> f64 {
    if z.is_empty() || z.len() != reconstruction.len() {
        return f64::NAN;
    }
    let sum: f64 = z
        .iter()
        .zip(reconstruction)
        .map(|(&a, &b)| {
            let d = f64::from(a) - f64::from(b);
            d * d
        })
        .sum();
    sum / z.len() as f64
}

/// `topk_mse_ratio` error of one window: the mean of the `k` largest squared per-slot errors
/// `(z_i - reconstruction_i)^2` (`k` is clamped to 1..=len).
///
/// Returns NaN for empty or mismatched slices, or if any value is NaN.
pub fn reconstruction_topk_mse(z: &[f32], reconstruction: &[f32], k: usize) -> f64 {
    if z.is_empty() || z.len() != reconstruction.len() {
        return f64::NAN;
    }
    let mut se: Vec<f64> = z
        .iter()
        .zip(reconstruction)
        .map(|(&a, &b)| {
            let d = f64::from(a) - f64::from(b);
            d * d
        })
        .collect();
    if se.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    se.sort_unstable_by(|a, b| b.total_cmp(a));
    let k = k.clamp(1, se.len());
    se[..k].iter().sum::<f64>() / k as f64
}

/// Reconstruction error of one window as the manifest's `score.method` defines it.
pub fn window_error(spec: &ScoreSpec, z: &[f32], reconstruction: &[f32]) -> f64 {
    match spec.method {
        ScoreMethod::MseRatio => reconstruction_mse(z, reconstruction),
        ScoreMethod::TopkMseRatio => reconstruction_topk_mse(z, reconstruction, spec.k.unwrap_or(1)),
    }
}

/// Score `mse_ratio` (see `models/MANIFEST-FORMAT.md`): `error / (error + error_scale)`, in
/// `[0, 1)` for a finite error and `error_scale > 0` (the manifest guarantees the latter).
/// An infinite error scores 1.0; a NaN error gives NaN.
pub fn mse_ratio_score(error: f64, error_scale: f64) -> f64 {
    if error.is_infinite() {
        return 1.0;
    }
    error / (error + error_scale)
}

/// Result of [`ModelRuntime::verify_golden`] when all outputs are within tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenReport {
    /// Golden windows run (as one batch).
    pub windows: usize,
    /// Output elements compared.
    pub elements: usize,
    /// Largest |runtime output − TensorFlow output| over all elements.
    pub max_abs_diff: f32,
    /// Mean |diff| over all elements.
    pub mean_abs_diff: f32,
    /// Tolerance from `golden.json`.
    pub tolerance: f32,
    /// Largest |score(runtime) − score(golden outputs)| over the windows.
    pub max_score_diff: f64,
}

/// A TF Lite interpreter (1 thread, no XNNPACK) for one sha256-verified model.
///
/// `Send`, not `Sync`: see the module documentation for the threading contract.
pub struct ModelRuntime {
    engine: Engine,
    manifest: Manifest,
    golden: Golden,
    model_path: PathBuf,
    dir: PathBuf,
    width: usize,
    /// Batch size the tensors are currently allocated for (0: none / unknown).
    batch: usize,
}

impl std::fmt::Debug for ModelRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRuntime")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("sha256", &self.manifest.sha256)
            .field("width", &self.width)
            .field("batch", &self.batch)
            .finish()
    }
}

impl ModelRuntime {
    /// Loads the model folder `model_dir` (manifest, sha256 check, golden vectors) and builds
    /// an interpreter for it. Call [`verify_golden`](Self::verify_golden) (or use
    /// [`load_verified`](Self::load_verified)) before trusting its outputs.
    pub fn load(model_dir: &Path) -> Result<Self, InferenceError> {
        Self::from_verified(VerifiedModel::load(model_dir)?)
    }

    /// [`load`](Self::load) followed by [`verify_golden`](Self::verify_golden).
    pub fn load_verified(model_dir: &Path) -> Result<(Self, GoldenReport), InferenceError> {
        let mut rt = Self::load(model_dir)?;
        let report = rt.verify_golden()?;
        Ok((rt, report))
    }

    /// Builds the interpreter for an already verified model and checks its tensors against
    /// the manifest (one float32 input `[batch, width]`, one float32 output).
    pub fn from_verified(model: VerifiedModel) -> Result<Self, InferenceError> {
        let VerifiedModel {
            dir,
            manifest,
            model_path,
            model_bytes,
            golden,
        } = model;
        let engine = Engine::new(&model_bytes).map_err(|f| tf_error(&model_path, f))?;
        drop(model_bytes);
        let width = manifest.input_width();
        let mut rt = ModelRuntime {
            engine,
            manifest,
            golden,
            model_path,
            dir,
            width,
            batch: 0,
        };
        rt.check_tensors()?;
        tracing::info!(
            model = %rt.manifest.name,
            version = %rt.manifest.version,
            sha256 = %rt.manifest.sha256,
            width = rt.width,
            tflite = backend::version(),
            backend = backend::NAME,
            "model loaded"
        );
        Ok(rt)
    }

    fn shape_err(&self, reason: String) -> InferenceError {
        InferenceError::ModelShape {
            path: self.model_path.clone(),
            reason,
        }
    }

    fn tf_err(&self) -> impl FnOnce(Failure) -> InferenceError + '_ {
        |f| tf_error(&self.model_path, f)
    }

    fn check_tensors(&mut self) -> Result<(), InferenceError> {
        let (ni, no) = self.engine.tensor_counts();
        if ni != 1 || no != 1 {
            return Err(self.shape_err(format!(
                "expected 1 input and 1 output tensor, model has {ni} and {no}"
            )));
        }
        // Allocate for batch 1 so that the tensors can be inspected.
        self.ensure_batch(1)?;
        let input = self.engine.input().map_err(self.tf_err())?;
        let dims = input.dims;
        if !input.float32 {
            return Err(self.shape_err(format!(
                "input tensor is {}, manifest says float32",
                input.type_name
            )));
        }
        if dims != [1, self.width] {
            return Err(self.shape_err(format!(
                "input tensor has shape {dims:?} at batch 1, manifest implies [1, {}]",
                self.width
            )));
        }
        // A model whose layers do not take `width` values per window allocates no output for
        // this input shape (TF Lite then reports "must call invoke()").
        let output = self.engine.output().map_err(|f| {
            self.shape_err(format!(
                "no output tensor for an input of shape [1, {}] ({}): the model does not take the manifest's input width",
                self.width,
                tf_error(&self.model_path, f)
            ))
        })?;
        if !output.float32 {
            return Err(self.shape_err(format!(
                "output tensor is {}, manifest says float32",
                output.type_name
            )));
        }
        Ok(())
    }

    /// Resizes the input's batch dimension and re-allocates, only if `n` changed.
    fn ensure_batch(&mut self, n: usize) -> Result<(), InferenceError> {
        if self.batch == n {
            return Ok(());
        }
        self.batch = 0; // unknown until the resize succeeds
        let width = self.width;
        self.engine.set_batch(n, width).map_err(|f| tf_error(&self.model_path, f))?;
        self.batch = n;
        Ok(())
    }

    /// Runs `n` windows (`inputs` is `[n, width]` row-major) in one `invoke` and replaces the
    /// contents of `out` with the `[n, width]` float32 outputs.
    pub fn run_batch(
        &mut self,
        inputs: &[f32],
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        out.clear();
        if n == 0 {
            return if inputs.is_empty() {
                Ok(())
            } else {
                Err(self.bad_batch(format!("n = 0 but {} input values", inputs.len())))
            };
        }
        if n > MAX_BATCH {
            return Err(self.bad_batch(format!("n = {n} exceeds MAX_BATCH = {MAX_BATCH}")));
        }
        let expected = n * self.width;
        if inputs.len() != expected {
            return Err(self.bad_batch(format!(
                "{} input values for n = {n} windows of width {} (expected {expected})",
                inputs.len(),
                self.width
            )));
        }
        self.ensure_batch(n)?;
        let width = self.width;
        self.engine.run(inputs, n, width, out).map_err(|f| tf_error(&self.model_path, f))?;
        if out.len() != expected {
            let got = out.len();
            out.clear();
            return Err(self.shape_err(format!(
                "output has {got} float32 values for {n} windows, expected {expected}"
            )));
        }
        Ok(())
    }

    fn bad_batch(&self, reason: String) -> InferenceError {
        InferenceError::BadBatch {
            path: self.model_path.clone(),
            reason,
        }
    }

    /// Runs the golden inputs as one batch and compares every output element with
    /// TensorFlow's within the golden tolerance. Errors with
    /// [`InferenceError::GoldenMismatch`] if any element is off by more than that (this
    /// catches, e.g., models that a TF Lite 2.6 runtime silently evaluates to zeros).
    pub fn verify_golden(&mut self) -> Result<GoldenReport, InferenceError> {
        let n = self.golden.inputs.len();
        let flat = self.golden.flat_inputs();
        let mut out = Vec::with_capacity(flat.len());
        self.run_batch(&flat, n, &mut out)?;

        let tolerance = self.golden.tolerance;
        let error_scale = self.manifest.score.error_scale;
        let mut max = (0.0f32, 0usize, 0usize); // (diff, window, element)
        let mut sum = 0.0f64;
        let mut max_score_diff = 0.0f64;
        for (w, (x, want)) in self
            .golden
            .inputs
            .iter()
            .zip(&self.golden.outputs)
            .enumerate()
        {
            let got = &out[w * self.width..(w + 1) * self.width];
            for (e, (&g, &t)) in got.iter().zip(want).enumerate() {
                let d = (g - t).abs();
                // A NaN output must fail the check, so it wins the maximum.
                if d.is_nan() || d > max.0 {
                    max = (d, w, e);
                }
                sum += f64::from(d);
            }
            let spec = &self.manifest.score;
            let s_got = mse_ratio_score(window_error(spec, x, got), error_scale);
            let s_want = mse_ratio_score(window_error(spec, x, want), error_scale);
            max_score_diff = max_score_diff.max((s_got - s_want).abs());
        }
        let (max_abs_diff, window, element) = max;
        if max_abs_diff.is_nan() || max_abs_diff > tolerance {
            return Err(InferenceError::GoldenMismatch {
                path: self.model_path.clone(),
                max_abs_diff,
                tolerance,
                window,
                element,
                got: out[window * self.width + element],
                expected: self.golden.outputs[window][element],
            });
        }
        let elements = out.len();
        Ok(GoldenReport {
            windows: n,
            elements,
            max_abs_diff,
            mean_abs_diff: (sum / elements as f64) as f32,
            tolerance,
            max_score_diff,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn golden(&self) -> &Golden {
        &self.golden
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// Lowercase hex sha256 of the model file (verified at load).
    pub fn sha256(&self) -> &str {
        &self.manifest.sha256
    }

    /// Floats per window: `window * channels`.
    pub fn input_width(&self) -> usize {
        self.width
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Batch size the tensors are currently allocated for (0 before the first allocation).
    pub fn allocated_batch(&self) -> usize {
        self.batch
    }

    /// Score of one window (the manifest's `score.method`) from its input `z` and the model's
    /// `reconstruction`.
    pub fn score(&self, z: &[f32], reconstruction: &[f32]) -> f64 {
        mse_ratio_score(
            window_error(&self.manifest.score, z, reconstruction),
            self.manifest.score.error_scale,
        )
    }
}

/// Version of the TensorFlow Lite linked in ("2.6.0" through tflitec on x86_64, "1.15" for the
/// vendored C++ backend).
pub fn tflite_version() -> &'static str {
    backend::version()
}

fn tf_error(path: &Path, f: Failure) -> InferenceError {
    InferenceError::TfLite { path: path.to_path_buf(), op: f.op, source: f.source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mse_and_score() {
        let z = [1.0f32, -1.0, 0.5, 0.0];
        let r = [0.0f32, -1.0, 0.0, 0.5];
        let e = reconstruction_mse(&z, &r);
        assert!((e - 0.375).abs() < 1e-12, "{e}");
        assert!((mse_ratio_score(e, 0.125) - 0.75).abs() < 1e-12);
        assert_eq!(mse_ratio_score(0.0, 0.1), 0.0);
        assert_eq!(mse_ratio_score(f64::INFINITY, 0.1), 1.0);
        assert!(reconstruction_mse(&z, &r[..3]).is_nan());
        assert!(reconstruction_mse(&[], &[]).is_nan());
        // Monotone and below 1 for large finite errors.
        assert!(mse_ratio_score(1e6, 0.1) < 1.0);
        assert!(mse_ratio_score(2.0, 0.1) > mse_ratio_score(1.0, 0.1));
    }

    #[test]
    fn topk_error() {
        // squared errors: 1, 0, 0.25, 0.25, 9
        let z = [1.0f32, -1.0, 0.5, 0.0, 3.0];
        let r = [0.0f32, -1.0, 0.0, 0.5, 0.0];
        assert_eq!(reconstruction_topk_mse(&z, &r, 1), 9.0);
        assert_eq!(reconstruction_topk_mse(&z, &r, 2), 5.0);
        assert_eq!(reconstruction_topk_mse(&z, &r, 4), 2.625);
        // k = len is the plain mean; k is clamped into 1..=len
        assert_eq!(reconstruction_topk_mse(&z, &r, 5), reconstruction_mse(&z, &r));
        assert_eq!(reconstruction_topk_mse(&z, &r, 50), 2.1);
        assert_eq!(reconstruction_topk_mse(&z, &r, 0), 9.0);
        assert!(reconstruction_topk_mse(&z, &r[..3], 2).is_nan());
        assert!(reconstruction_topk_mse(&[f32::NAN], &[0.0], 1).is_nan());
        let spec = ScoreSpec { method: ScoreMethod::TopkMseRatio, k: Some(2), error_scale: 5.0 };
        assert_eq!(mse_ratio_score(window_error(&spec, &z, &r), spec.error_scale), 0.5);
        let spec = ScoreSpec { method: ScoreMethod::MseRatio, k: None, error_scale: 2.1 };
        assert_eq!(window_error(&spec, &z, &r), 2.1);
    }

    #[test]
    fn runtime_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<ModelRuntime>();
    }

    #[test]
    #[cfg(not(feature = "tflite-vendored"))]
    fn links_tflite_2_6() {
        assert_eq!(tflite_version(), "2.6.0");
    }
}
