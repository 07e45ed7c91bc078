//! Drives the [`PlantSimulator`] as a source: one tick every `period_ms` of simulated time,
//! paced to wall-clock time by `speedup`, each tick one [`IngestBatch`].
//!
//! Simulated readings are trusted (no decoder, no DLQ); their event times start at the wall
//! clock when the agent starts and advance `speedup` times faster. Injected anomalies are
//! logged when they start, so the demo shows cause next to effect.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::simulator::{PlantSimulator, SimulatorConfig};
use super::IngestBatch;
use crate::reading::{now_ms, Quality, Reading, SourceKind};

/// Runs until `stop` is set, the duration is reached, or the commit log goes away.
pub fn run(cfg: SimulatorConfig, ingest: Sender<IngestBatch>, stop: Arc<AtomicBool>) {
    let start_ms = now_ms();
    let mut sim = PlantSimulator::new(&cfg, start_ms);
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut announced: HashSet<(Arc<str>, i64)> = HashSet::new();
    let mut tick: u64 = 0;
    tracing::info!(machines = cfg.machines, sensors = sim.entities().len(), speedup = cfg.speedup, "plant simulator started");
    while !stop.load(Ordering::Relaxed) {
        let sim_elapsed_ms = tick * cfg.period_ms;
        if cfg.duration_s > 0 && sim_elapsed_ms >= cfg.duration_s * 1000 {
            tracing::info!(ticks = tick, "plant simulator finished its configured duration");
            break;
        }
        // Pacing to wall-clock time (this is the simulator's clock, not synchronisation).
        let due = Duration::from_secs_f64(sim_elapsed_ms as f64 / 1000.0 / cfg.speedup);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            continue;
        }
        let event_time_ms = start_ms + sim_elapsed_ms as i64;
        samples.clear();
        sim.step(event_time_ms, &mut samples);
        let mut active = HashSet::new();
        for a in sim.active_anomalies() {
            if !announced.contains(&(a.entity.clone(), a.started_ms)) {
                tracing::info!(entity = %a.entity, kind = a.kind.as_str(), at_ms = a.started_ms, "simulator: injected anomaly");
            }
            active.insert((a.entity, a.started_ms));
        }
        announced = active;
        let now = now_ms();
        let readings = samples
            .iter()
            .map(|s| Reading {
                entity: s.entity.to_string(),
                event_time_ms,
                value: s.value,
                quality: Quality::Good,
                source: SourceKind::Simulator,
                ingest_time_ms: now,
                seq: 0,
                source_seq: Some(tick),
            })
            .collect();
        if ingest.send(IngestBatch { readings, rejects: Vec::new(), on_commit: None }).is_err() {
            break;
        }
        tick += 1;
    }
}
