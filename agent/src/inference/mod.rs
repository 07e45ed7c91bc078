//! Model inference: verified TensorFlow Lite models run through a TF Lite [`backend`]
//! (`tflitec` by default, the vendored C++ TF Lite for ARM).
//!
//! * [`manifest`] — the `models/<name>/<version>/` contract (see `models/MANIFEST-FORMAT.md`):
//!   `manifest.json` types and validation, sha256 verification of the model file, golden
//!   vectors.
//! * [`runtime`] — [`ModelRuntime`], one TF Lite interpreter (1 thread, no XNNPACK) for one
//!   verified model, with batched invocation and golden-vector self-check; plus the pure
//!   scoring math ([`window_error`], [`mse_ratio_score`]).
//! * [`batcher`] — the inference thread: micro-batches, each model's normalisation and scores.
//! * [`lifecycle`] — the model registry, deployments (`active` / `shadow` / `canary`), their
//!   comparison and automatic rollback; the loader thread that verifies new versions.
//!
//! # Native library
//! With the default `tflite-c` feature, `tflitec` links `libtensorflowlite_c.so` (TF Lite 2.6.0, C API) dynamically. Run
//! `cross/tflite/provide-runtime.sh` once (and after `cargo clean`): `.cargo/config.toml` points
//! tflitec's build script at the extracted library and at our C API headers in
//! `cross/tflite/include`. Release binaries carry RUNPATH `$ORIGIN`: ship the `.so` next to
//! the `vigil` binary. With `tflite-vendored` (ARM builds, `cross/build.sh`) TF Lite is linked
//! statically and nothing needs shipping.
//!
//! # Threading contract
//! Inference is blocking CPU work and must never run on tokio's worker threads. A
//! [`ModelRuntime`] is `Send` but not `Sync`: create it anywhere, move it to the dedicated
//! inference OS thread, and use it only there (every call takes `&mut self`). See
//! [`runtime`] for details.

use std::path::PathBuf;

pub mod backend;
pub mod batcher;
pub mod drift;
pub mod lifecycle;
pub mod manifest;
pub mod runtime;

pub use manifest::{Golden, Manifest, VerifiedModel};
pub use runtime::{
    mse_ratio_score, reconstruction_mse, reconstruction_topk_mse, window_error, GoldenReport, ModelRuntime,
};

/// Everything that can go wrong while loading, verifying or running a model.
///
/// Every variant names the file (or model) involved and the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// Reading a file failed.
    #[error("cannot read {what} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (manifest or golden vectors) does not parse into the expected schema.
    #[error("cannot parse {what} {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// `manifest.json` parsed but violates the contract (unsupported schema, bad value, ...).
    #[error("invalid manifest {}: {reason}", path.display())]
    InvalidManifest { path: PathBuf, reason: String },

    /// `golden.json` parsed but does not fit the manifest.
    #[error("invalid golden vectors {}: {reason}", path.display())]
    InvalidGolden { path: PathBuf, reason: String },

    /// The model file's sha256 differs from the manifest: the model is refused.
    #[error(
        "sha256 mismatch for model file {}: manifest says {expected}, file has {actual}; \
         refusing to load a model that does not match its manifest",
        path.display()
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// A TensorFlow Lite call failed.
    #[error("TensorFlow Lite failed to {op} for model {}: {source}", path.display())]
    TfLite {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: backend::Error,
    },

    /// The model's tensors do not match what the manifest declares.
    #[error("model {} does not match its manifest: {reason}", path.display())]
    ModelShape { path: PathBuf, reason: String },

    /// `run_batch` was called with inconsistent arguments.
    #[error("bad batch for model {}: {reason}", path.display())]
    BadBatch { path: PathBuf, reason: String },

    /// The runtime's outputs for the golden inputs differ from TensorFlow's by more than the
    /// manifest's tolerance.
    #[error(
        "golden check failed for model {}: max |diff| {max_abs_diff} > tolerance {tolerance} \
         (window {window}, element {element}: got {got}, expected {expected})",
        path.display()
    )]
    GoldenMismatch {
        path: PathBuf,
        max_abs_diff: f32,
        tolerance: f32,
        window: usize,
        element: usize,
        got: f32,
        expected: f32,
    },
}
