//! `models/<name>/<version>/manifest.json` (schema 1) and `golden.json`, as specified in
//! `models/MANIFEST-FORMAT.md`.
//!
//! [`VerifiedModel::load`] is the only way the runtime gets model bytes: it parses and
//! validates the manifest, reads the model file once, checks its sha256 against the manifest
//! (the bytes that were hashed are the bytes that get interpreted) and loads the golden
//! vectors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::InferenceError;

/// File name of the manifest inside a model folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The only manifest schema this agent understands.
pub const SCHEMA_VERSION: u32 = 1;

/// `manifest.json`, schema 1. Unknown fields are rejected everywhere except in `training`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub name: String,
    pub version: String,
    pub kind: ModelKind,
    /// Model file name, relative to the model folder.
    pub file: String,
    /// Lowercase hex sha256 of the model file.
    pub sha256: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub normalisation: Normalisation,
    pub score: ScoreSpec,
    pub thresholds: Thresholds,
    /// Free-form training summary; informational only.
    #[serde(default)]
    pub training: serde_json::Value,
    /// Golden vectors file name, relative to the model folder.
    pub golden: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// One channel per window.
    Univariate,
    /// Several channels of one asset (`input.channels`), joined onto a common time grid by the
    /// pipeline (`pipeline.assets`); input layout time-major (t0c0, t0c1, …, t1c0, …).
    Multivariate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    Float32,
}

/// Model input: `[batch, window * channels]`, row-major, time-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub window: usize,
    pub channels: Vec<String>,
    pub dtype: DType,
}

impl InputSpec {
    /// Floats per window: `window * channels`.
    pub fn width(&self) -> usize {
        self.window * self.channels.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// The output has the input's shape and is compared with it.
    Reconstruction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub dtype: DType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormalisationMethod {
    /// `z = (x − ewma_mean) / ewma_std` (the entity's long-run level and spread).
    EntityEwmaZscore,
    /// `z = (x − window mean) / noise_std`, noise from capped first differences.
    EntityNoiseZscore,
    /// Per channel of an asset: `z = (x − mean) / std` with the mean and standard deviation of
    /// the channel's first `warmup` readings, frozen afterwards (the asset's own baseline).
    AssetWarmupZscore,
}

/// Per-entity EWMA z-score normalisation parameters (see the format doc for the exact maths).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    pub method: NormalisationMethod,
    pub alpha: f64,
    pub min_std: f64,
    pub clip: f64,
    /// Readings an entity must have seen before its windows are scored.
    pub warmup: u64,
    /// `entity_noise_zscore` only (required there): the scale is at least this multiple of
    /// the rms of the window's residual around its least-squares line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_std_ratio: Option<f64>,
    /// `asset_warmup_zscore` only (required there): a channel's scale is at least this
    /// fraction of its baseline mean's magnitude (a sensor's resolution relative to its level:
    /// a nearly constant channel does not turn tiny drifts into huge z values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_std_floor: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMethod {
    /// `error = mean((z - reconstruction)^2)`, `score = error / (error + error_scale)`.
    MseRatio,
    /// `error` = mean of the `k` largest `(z_i - reconstruction_i)^2`; same ratio.
    TopkMseRatio,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    pub method: ScoreMethod,
    /// Number of per-slot squared errors averaged by `topk_mse_ratio` (required there, and
    /// not allowed with `mse_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    pub error_scale: f64,
}

/// Thresholds on `score`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub review: f64,
    pub alert: f64,
}

/// Band a score falls into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Band {
    Normal,
    Review,
    Alert,
}

impl Thresholds {
    /// `score >= alert` → alert, `score >= review` → review, else normal (NaN → normal).
    pub fn band(&self, score: f64) -> Band {
        if score >= self.alert {
            Band::Alert
        } else if score >= self.review {
            Band::Review
        } else {
            Band::Normal
        }
    }
}

/// `golden.json`: normalised inputs and TF Lite's own outputs for them.
///
/// Only `inputs`, `outputs` and `tolerance` are part of the contract; the model pipeline also
/// writes informational fields (`errors`, `scores`, `descriptions`, `note`), which are kept when
/// present and other unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Golden {
    pub inputs: Vec<Vec<f32>>,
    pub outputs: Vec<Vec<f32>>,
    /// Max absolute difference allowed per output element.
    pub tolerance: f32,
    /// Reconstruction error per window, computed from `inputs` and `outputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<f64>>,
    /// Score per window, computed from `errors` and the manifest's `error_scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Golden {
    /// Inputs flattened into one `[n, width]` row-major batch.
    pub fn flat_inputs(&self) -> Vec<f32> {
        self.inputs.iter().flatten().copied().collect()
    }

    /// Checks the vectors against the manifest's input width.
    pub fn validate(&self, manifest: &Manifest, path: &Path) -> Result<(), InferenceError> {
        let bad = |reason: String| InferenceError::InvalidGolden {
            path: path.to_path_buf(),
            reason,
        };
        let width = manifest.input.width();
        if self.inputs.is_empty() {
            return Err(bad("no golden inputs".into()));
        }
        if self.inputs.len() != self.outputs.len() {
            return Err(bad(format!(
                "{} inputs but {} outputs",
                self.inputs.len(),
                self.outputs.len()
            )));
        }
        for (i, (x, y)) in self.inputs.iter().zip(&self.outputs).enumerate() {
            if x.len() != width || y.len() != width {
                return Err(bad(format!(
                    "window {i}: input has {} and output {} values, manifest width is {width}",
                    x.len(),
                    y.len()
                )));
            }
            if x.iter().chain(y).any(|v| !v.is_finite()) {
                return Err(bad(format!("window {i} contains a non-finite value")));
            }
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(bad(format!(
                "tolerance {} is not a finite value >= 0",
                self.tolerance
            )));
        }
        for (field, v) in [("errors", &self.errors), ("scores", &self.scores)] {
            if let Some(v) = v {
                if v.len() != self.inputs.len() {
                    return Err(bad(format!(
                        "{field} has {} entries for {} windows",
                        v.len(),
                        self.inputs.len()
                    )));
                }
            }
        }
        Ok(())
    }
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, InferenceError> {
    std::fs::read(path).map_err(|source| InferenceError::Io {
        path: path.to_path_buf(),
        what,
        source,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<T, InferenceError> {
    serde_json::from_slice(bytes).map_err(|source| InferenceError::Parse {
        path: path.to_path_buf(),
        what,
        source,
    })
}

/// A file name inside the model folder: no directories, no `..`, not empty.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Manifest {
    /// Reads and validates `<model_dir>/manifest.json`.
    pub fn load(model_dir: &Path) -> Result<Self, InferenceError> {
        let path = model_dir.join(MANIFEST_FILE);
        let bytes = read_file(&path, "model manifest")?;
        let manifest: Manifest = parse_json(&bytes, &path, "model manifest")?;
        manifest.validate(&path)?;
        Ok(manifest)
    }

    /// Floats per window fed to the model (`window * channels`).
    pub fn input_width(&self) -> usize {
        self.input.width()
    }

    /// Checks every constraint of the contract that serde cannot express.
    pub fn validate(&self, path: &Path) -> Result<(), InferenceError> {
        let bad = |reason: String| {
            Err(InferenceError::InvalidManifest {
                path: path.to_path_buf(),
                reason,
            })
        };
        if self.schema != SCHEMA_VERSION {
            return bad(format!(
                "schema {} is not supported (this agent understands schema {SCHEMA_VERSION})",
                self.schema
            ));
        }
        if self.name.is_empty() || self.version.is_empty() {
            return bad("name and version must not be empty".into());
        }
        if !is_plain_file_name(&self.file) {
            return bad(format!("file {:?} must be a plain file name", self.file));
        }
        if !is_plain_file_name(&self.golden) {
            return bad(format!(
                "golden {:?} must be a plain file name",
                self.golden
            ));
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad(format!(
                "sha256 {:?} is not 64 lowercase hex digits",
                self.sha256
            ));
        }
        if self.input.window == 0 {
            return bad("input.window must be > 0".into());
        }
        if self.input.channels.is_empty() {
            return bad("input.channels must not be empty".into());
        }
        if self.kind == ModelKind::Univariate && self.input.channels.len() != 1 {
            return bad(format!(
                "a univariate model has exactly one channel, found {}",
                self.input.channels.len()
            ));
        }
        let asset_method = self.normalisation.method == NormalisationMethod::AssetWarmupZscore;
        if asset_method != (self.kind == ModelKind::Multivariate) {
            return bad(format!(
                "normalisation.method asset_warmup_zscore goes with kind multivariate and only with it (kind {:?}, method {:?})",
                self.kind, self.normalisation.method
            ));
        }
        match self.normalisation.relative_std_floor {
            Some(r) if asset_method && r >= 0.0 && r.is_finite() => {}
            None if !asset_method => {}
            r => {
                return bad(format!(
                    "normalisation.relative_std_floor is required (a finite value >= 0) with asset_warmup_zscore and allowed only there, got {r:?}"
                ))
            }
        }
        if asset_method && self.normalisation.warmup < 2 {
            return bad("normalisation.warmup must be >= 2 for asset_warmup_zscore (it estimates a standard deviation)".into());
        }
        for (i, c) in self.input.channels.iter().enumerate() {
            if c.is_empty() || self.input.channels[..i].contains(c) {
                return bad(format!("input.channels: channel {i} ({c:?}) is empty or repeated"));
            }
        }
        let n = &self.normalisation;
        if !(n.alpha > 0.0 && n.alpha <= 1.0) {
            return bad(format!("normalisation.alpha {} is not in (0, 1]", n.alpha));
        }
        if !(n.min_std > 0.0 && n.min_std.is_finite()) {
            return bad(format!("normalisation.min_std {} must be > 0", n.min_std));
        }
        if !(n.clip > 0.0 && n.clip.is_finite()) {
            return bad(format!("normalisation.clip {} must be > 0", n.clip));
        }
        match (n.method, n.window_std_ratio) {
            (NormalisationMethod::EntityEwmaZscore | NormalisationMethod::AssetWarmupZscore, None) => {}
            (NormalisationMethod::EntityEwmaZscore | NormalisationMethod::AssetWarmupZscore, Some(_)) => {
                return bad("normalisation.window_std_ratio is only allowed with entity_noise_zscore".into())
            }
            (NormalisationMethod::EntityNoiseZscore, Some(r)) if r >= 0.0 && r.is_finite() => {}
            (NormalisationMethod::EntityNoiseZscore, r) => {
                return bad(format!(
                    "normalisation.window_std_ratio must be a finite value >= 0 for entity_noise_zscore, got {r:?}"
                ))
            }
        }
        match (self.score.method, self.score.k) {
            (ScoreMethod::MseRatio, None) => {}
            (ScoreMethod::MseRatio, Some(_)) => {
                return bad("score.k is only allowed with score.method topk_mse_ratio".into())
            }
            (ScoreMethod::TopkMseRatio, Some(k)) if (1..=self.input.width()).contains(&k) => {}
            (ScoreMethod::TopkMseRatio, k) => {
                return bad(format!(
                    "score.k must be 1..={} for topk_mse_ratio, got {k:?}",
                    self.input.width()
                ))
            }
        }
        if !(self.score.error_scale > 0.0 && self.score.error_scale.is_finite()) {
            return bad(format!(
                "score.error_scale {} must be > 0",
                self.score.error_scale
            ));
        }
        let t = &self.thresholds;
        if !(0.0 <= t.review && t.review <= t.alert && t.alert <= 1.0) {
            return bad(format!(
                "thresholds must satisfy 0 <= review ({}) <= alert ({}) <= 1",
                t.review, t.alert
            ));
        }
        Ok(())
    }
}

/// A model folder whose manifest is valid and whose model bytes match the manifest's sha256.
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    /// The model folder.
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Path of the model file (for messages).
    pub model_path: PathBuf,
    /// The model file's contents, exactly the bytes that were hashed.
    pub model_bytes: Vec<u8>,
    pub golden: Golden,
}

impl VerifiedModel {
    /// Loads `manifest.json`, the model file (verifying its sha256) and the golden vectors from
    /// `model_dir`.
    pub fn load(model_dir: &Path) -> Result<Self, InferenceError> {
        let manifest = Manifest::load(model_dir)?;
        let model_path = model_dir.join(&manifest.file);
        let model_bytes = read_file(&model_path, "model file")?;
        let actual = sha256_hex(&model_bytes);
        if actual != manifest.sha256 {
            return Err(InferenceError::ChecksumMismatch {
                path: model_path,
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        let golden = load_golden(&model_dir.join(&manifest.golden), &manifest)?;
        Ok(Self {
            dir: model_dir.to_path_buf(),
            manifest,
            model_path,
            model_bytes,
            golden,
        })
    }
}

/// Reads and validates a golden vectors file for `manifest`.
pub fn load_golden(path: &Path, manifest: &Manifest) -> Result<Golden, InferenceError> {
    let bytes = read_file(path, "golden vectors")?;
    let golden: Golden = parse_json(&bytes, path, "golden vectors")?;
    golden.validate(manifest, path)?;
    Ok(golden)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "schema": 1,
            "name": "univariate-ae",
            "version": "1.0.0",
            "kind": "univariate",
            "file": "model.tflite",
            "sha256": "0".repeat(64),
            "input":  {"window": 32, "channels": ["value"], "dtype": "float32"},
            "output": {"kind": "reconstruction", "dtype": "float32"},
            "normalisation": {"method": "entity_ewma_zscore", "alpha": 0.0078125,
                              "min_std": 0.001, "clip": 8.0, "warmup": 64},
            "score": {"method": "mse_ratio", "error_scale": 0.123},
            "thresholds": {"review": 0.5, "alert": 0.8},
            "training": {"anything": [1, 2, {"goes": true}]},
            "golden": "golden.json"
        })
    }

    fn parse(v: serde_json::Value) -> Result<Manifest, InferenceError> {
        let m: Manifest = serde_json::from_value(v).map_err(|source| InferenceError::Parse {
            path: "m.json".into(),
            what: "model manifest",
            source,
        })?;
        m.validate(Path::new("m.json"))?;
        Ok(m)
    }

    #[test]
    fn parses_the_documented_example() {
        let m = parse(sample()).unwrap();
        assert_eq!(m.input_width(), 32);
        assert_eq!(m.kind, ModelKind::Univariate);
        assert_eq!(m.score.error_scale, 0.123);
        assert_eq!(m.normalisation.warmup, 64);
        assert_eq!(m.training["anything"][2]["goes"], true);
    }

    #[test]
    fn rejects_unknown_fields_outside_training() {
        let mut v = sample();
        v["input"]["stride"] = 1.into();
        let err = parse(v).unwrap_err();
        assert!(err.to_string().contains("stride"), "{err}");
        let mut v = sample();
        v["extra"] = 1.into();
        assert!(parse(v).is_err());
    }

    #[test]
    fn rejects_contract_violations() {
        type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("schema", Box::new(|v| v["schema"] = 2.into())),
            ("sha256", Box::new(|v| v["sha256"] = "AB".repeat(32).into())),
            ("file", Box::new(|v| v["file"] = "../x.tflite".into())),
            (
                "channel",
                Box::new(|v| v["input"]["channels"] = serde_json::json!(["a", "b"])),
            ),
            (
                "error_scale",
                Box::new(|v| v["score"]["error_scale"] = 0.0.into()),
            ),
            (
                "thresholds",
                Box::new(|v| v["thresholds"]["review"] = 0.9.into()),
            ),
            (
                "alpha",
                Box::new(|v| v["normalisation"]["alpha"] = 0.0.into()),
            ),
            (
                "unknown variant",
                Box::new(|v| v["output"]["kind"] = "classifier".into()),
            ),
            ("score.k", Box::new(|v| v["score"]["k"] = 4.into())),
            (
                "window_std_ratio",
                Box::new(|v| v["normalisation"]["window_std_ratio"] = 0.5.into()),
            ),
            (
                "window_std_ratio",
                Box::new(|v| v["normalisation"]["method"] = "entity_noise_zscore".into()),
            ),
            (
                "score.k",
                Box::new(|v| v["score"] = serde_json::json!({"method": "topk_mse_ratio", "error_scale": 1.0})),
            ),
            (
                "score.k",
                Box::new(|v| v["score"] = serde_json::json!({"method": "topk_mse_ratio", "k": 33, "error_scale": 1.0})),
            ),
        ];
        for (needle, mutate) in cases {
            let mut v = sample();
            mutate(&mut v);
            let err = parse(v).expect_err(needle).to_string();
            assert!(err.contains(needle), "expected {needle:?} in {err}");
        }
    }

    #[test]
    fn parses_noise_zscore_and_topk() {
        let mut v = sample();
        v["normalisation"]["method"] = "entity_noise_zscore".into();
        v["normalisation"]["warmup"] = 256.into();
        v["normalisation"]["window_std_ratio"] = 0.5.into();
        v["score"] = serde_json::json!({"method": "topk_mse_ratio", "k": 4, "error_scale": 30.0});
        let m = parse(v).unwrap();
        assert_eq!(m.normalisation.method, NormalisationMethod::EntityNoiseZscore);
        assert_eq!(m.normalisation.window_std_ratio, Some(0.5));
        assert_eq!((m.score.method, m.score.k), (ScoreMethod::TopkMseRatio, Some(4)));
    }

    #[test]
    fn bands() {
        let t = Thresholds {
            review: 0.5,
            alert: 0.8,
        };
        assert_eq!(t.band(0.49), Band::Normal);
        assert_eq!(t.band(0.5), Band::Review);
        assert_eq!(t.band(0.8), Band::Alert);
        assert_eq!(t.band(f64::NAN), Band::Normal);
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
