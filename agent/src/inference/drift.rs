//! Model drift: are the live model inputs and scores still distributed like the data the model
//! was calibrated on?
//!
//! # Design constraints
//!
//! - The reference distributions come from the model manifest
//!   (`training.feature_distributions`: histograms with fixed `bin_edges` and `counts`; values
//!   outside the edges belong to the end bins). Two are compared: the normalised model inputs
//!   (`input_z_held_out`, else `input_z_train`) and the scores (`score_held_out`). A manifest
//!   without them simply has no drift metrics.
//! - Live histograms use the same bins: one relaxed atomic add per value, written by the
//!   inference thread only. To follow the present rather than the whole uptime, all counts are
//!   halved whenever a histogram holds more than [`HALVE_ABOVE`] values (an exponential
//!   forgetting of old data).
//! - The comparison is the population stability index over the bins,
//!   `PSI = Σ (live − ref) · ln(live / ref)` with both proportions floored at [`PSI_FLOOR`]
//!   (an empty bin would be infinite). Common reading: < 0.1 stable, 0.1–0.25 moderate shift,
//!   > 0.25 significant shift. Exported as `vigil_model_drift_psi{model,version,feature}` once
//!   `alerts.drift_min_windows` windows were scored; the agent raises a `model_drift` health
//!   alert when it exceeds `alerts.drift_psi`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::inference::manifest::Manifest;
use crate::metrics::{Collector, Exposition, Kind};

/// Values a live histogram holds before all its counts are halved.
pub const HALVE_ABOVE: u64 = 1 << 20;
/// Smallest proportion used in the PSI sum.
pub const PSI_FLOOR: f64 = 1e-4;

/// One compared quantity.
pub struct Feature {
    /// `input_z` or `score`.
    pub name: &'static str,
    edges: Vec<f64>,
    /// Reference proportions per bin.
    reference: Vec<f64>,
    live: Vec<AtomicU64>,
    total: AtomicU64,
}

impl Feature {
    /// From a manifest histogram `{bin_edges, counts}`.
    fn from_json(name: &'static str, v: &serde_json::Value) -> Option<Feature> {
        let edges: Vec<f64> = v["bin_edges"].as_array()?.iter().filter_map(|x| x.as_f64()).collect();
        let counts: Vec<f64> = v["counts"].as_array()?.iter().filter_map(|x| x.as_f64()).collect();
        let sum: f64 = counts.iter().sum();
        if counts.is_empty() || edges.len() != counts.len() + 1 || sum <= 0.0 || !edges.windows(2).all(|w| w[0] < w[1]) {
            return None;
        }
        Some(Feature {
            name,
            edges,
            reference: counts.iter().map(|c| c / sum).collect(),
            live: counts.iter().map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
        })
    }

    fn bin(&self, v: f64) -> usize {
        // Interior edges decide; outside values fall into the end bins; NaN into the first.
        let interior = &self.edges[1..self.edges.len() - 1];
        interior.partition_point(|e| *e <= v)
    }

    fn observe(&self, v: f64) {
        self.live[self.bin(v)].fetch_add(1, Ordering::Relaxed);
        if self.total.fetch_add(1, Ordering::Relaxed) + 1 > HALVE_ABOVE {
            // Single writer (the inference thread): halving cannot lose a concurrent add.
            let mut total = 0;
            for c in &self.live {
                let h = c.load(Ordering::Relaxed) / 2;
                c.store(h, Ordering::Relaxed);
                total += h;
            }
            self.total.store(total, Ordering::Relaxed);
        }
    }

    /// PSI of the live histogram against the reference, and the values it holds.
    pub fn psi(&self) -> (f64, u64) {
        let live: Vec<u64> = self.live.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let n: u64 = live.iter().sum();
        if n == 0 {
            return (0.0, 0);
        }
        (psi(&live.iter().map(|c| *c as f64 / n as f64).collect::<Vec<_>>(), &self.reference), n)
    }
}

/// Population stability index of proportions `live` against `reference` (same bins).
pub fn psi(live: &[f64], reference: &[f64]) -> f64 {
    live.iter()
        .zip(reference)
        .map(|(p, q)| {
            let (p, q) = (p.max(PSI_FLOOR), q.max(PSI_FLOOR));
            (p - q) * (p / q).ln()
        })
        .sum()
}

/// The drift state of the loaded model.
pub struct DriftMonitor {
    pub model: String,
    pub version: String,
    /// Values per window of the input feature (the model's input width).
    width: u64,
    pub input: Option<Feature>,
    pub score: Option<Feature>,
}

/// One feature's drift, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DriftReading {
    pub feature: &'static str,
    pub psi: f64,
    /// Windows the live histogram represents.
    pub windows: u64,
}

impl DriftMonitor {
    /// `None` when the manifest holds no reference distribution.
    pub fn from_manifest(m: &Manifest) -> Option<DriftMonitor> {
        let d = &m.training["feature_distributions"];
        let input = Feature::from_json("input_z", &d["input_z_held_out"]).or_else(|| Feature::from_json("input_z", &d["input_z_train"]));
        let score = Feature::from_json("score", &d["score_held_out"]);
        if input.is_none() && score.is_none() {
            return None;
        }
        Some(DriftMonitor { model: m.name.clone(), version: m.version.clone(), width: m.input.width().max(1) as u64, input, score })
    }

    /// One scored window: its normalised input and its score.
    pub fn observe(&self, input: &[f32], score: f64) {
        if let Some(f) = &self.input {
            input.iter().for_each(|z| f.observe(*z as f64));
        }
        if let Some(f) = &self.score {
            f.observe(score);
        }
    }

    /// PSI per feature with the windows behind it.
    pub fn readings(&self) -> Vec<DriftReading> {
        let mut out = Vec::new();
        if let Some(f) = &self.input {
            let (psi, n) = f.psi();
            out.push(DriftReading { feature: f.name, psi, windows: n / self.width });
        }
        if let Some(f) = &self.score {
            let (psi, n) = f.psi();
            out.push(DriftReading { feature: f.name, psi, windows: n });
        }
        out
    }
}

/// `vigil_model_drift_psi{model,version,feature}` (once `min_windows` windows were seen) and
/// `vigil_model_drift_windows{model,version,feature}`.
pub struct DriftCollector {
    pub monitor: std::sync::Arc<DriftMonitor>,
    pub min_windows: u64,
}

impl Collector for DriftCollector {
    fn collect(&self, out: &mut Exposition) {
        let m = &self.monitor;
        let readings = m.readings();
        out.family("vigil_model_drift_windows", Kind::Gauge, "Scored windows behind the live distribution compared with the model's training distribution.");
        for r in &readings {
            out.sample("vigil_model_drift_windows", &[("model", &m.model), ("version", &m.version), ("feature", r.feature)], r.windows as f64);
        }
        out.family("vigil_model_drift_psi", Kind::Gauge, "Population stability index of live model inputs (input_z) and scores against the manifest's distributions.");
        for r in readings.iter().filter(|r| r.windows >= self.min_windows) {
            out.sample("vigil_model_drift_psi", &[("model", &m.model), ("version", &m.version), ("feature", r.feature)], r.psi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_equal_and_grows_with_shift() {
        let q = [0.25, 0.25, 0.25, 0.25];
        assert!(psi(&q, &q).abs() < 1e-12);
        let small = psi(&[0.3, 0.25, 0.25, 0.2], &q);
        let large = psi(&[0.7, 0.1, 0.1, 0.1], &q);
        assert!(small > 0.0 && small < 0.1 && large > 0.25, "{small} {large}");
    }

    #[test]
    fn bins_follow_the_manifest_edges_and_end_bins_take_outliers() {
        let f = Feature::from_json("score", &serde_json::json!({"bin_edges": [0.0, 0.5, 1.0], "counts": [3, 1]})).unwrap();
        assert_eq!([f.bin(-1.0), f.bin(0.0), f.bin(0.49), f.bin(0.5), f.bin(7.0)], [0, 0, 0, 1, 1]);
        for v in [0.1, 0.2, 0.3, 0.9] {
            f.observe(v);
        }
        assert!(f.psi().0.abs() < 1e-12, "same proportions as the reference (3:1)");
        assert!(Feature::from_json("x", &serde_json::json!({"bin_edges": [0.0, 1.0], "counts": [1, 2]})).is_none());
    }

    #[test]
    fn shipped_manifests_have_reference_distributions() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/univariate-ae");
        for v in ["1.0.0", "1.1.0"] {
            let text = std::fs::read_to_string(root.join(v).join("manifest.json")).unwrap();
            let m: Manifest = serde_json::from_str(&text).unwrap();
            let d = DriftMonitor::from_manifest(&m).expect("distributions");
            assert!(d.input.is_some() && d.score.is_some(), "{v}");
        }
    }
}
