//! Deterministic built-in plant simulator for demos and tests (no external service).
//!
//! **What is simulated.** `machines` machines, each with three sensors, emitted in this
//! order per tick: `"{prefix}.mNN.temperature"` (°C), `"{prefix}.mNN.vibration"` (RMS mm/s)
//! and `"{prefix}.mNN.current"` (A), with `NN` 1-based and zero-padded (`sim.m01.current`).
//!
//! **Physics.** Each machine follows a duty cycle: it alternates between *running* and
//! *idle* phases with exponentially distributed lengths (mean 240 s running / 120 s idle,
//! at least 20 s). Current is ~12 A ± 0.3 A while running (each machine has its own
//! nominal current between 11 and 13 A) and ~0.5 A ± 0.05 A while idle. Temperature is a
//! first-order lag (τ = 240 s) toward an operating point of ambient + 30–40 °C when running
//! or ambient + 2 °C when idle. The ambient temperature drifts as a 6-hour sinusoid
//! (22 ± 3 °C), and there is 0.15 °C Gaussian measurement noise. Vibration RMS is
//! log-normal noise (σ_log = 0.08) around a load-dependent level (≈1.2 mm/s running,
//! 0.15 mm/s idle).
//!
//! **Anomalies** (when `anomalies = true`). No anomaly starts before `first_anomaly_after_s`.
//! The first anomaly on each machine starts within one `anomaly_every_s` after that. When
//! an anomaly ends, the next one starts `anomaly_every_s × U(0.5, 1.5)` after the previous
//! start, and at least 10 s after the previous anomaly cleared. Each machine has at most one
//! active anomaly, which affects one sensor:
//! * [`AnomalyKind::Spike`]: 1–3 consecutive samples offset by 8–12σ of that sensor's noise;
//! * [`AnomalyKind::LevelShift`]: a 5–8σ offset held for 45–90 s;
//! * [`AnomalyKind::Stuck`]: the value freezes at the last reading for 60–180 s;
//! * [`AnomalyKind::RisingVibration`]: bearing wear. Vibration is multiplied by a factor
//!   that rises linearly (×3 after 5 min) until it clears after 3–8 min.
//!
//! Offsets are positive, except that temperature offsets may take either sign.
//! Anomalies only transform the emitted values. The underlying physics is identical with
//! and without them, so every sample that differs from the clean signal has a label in
//! [`SimSample::anomaly`].
//!
//! **Determinism.** The simulator does no I/O and never reads a clock. Each machine has its
//! own physics PRNG and its own schedule PRNG (SplitMix64 seeded from `seed`). So the same
//! config, `start_ms` and sequence of `step` times always give identical output. Times
//! that go backwards do not advance the physics.

use std::f64::consts::TAU;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Configuration of the built-in plant simulator.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Number of simulated machines (1–99). Each has a temperature, vibration and current sensor.
    pub machines: u32,
    /// Sample period per sensor in milliseconds: the driver calls `step` this often.
    pub period_ms: u64,
    /// PRNG seed. The same seed and the same event times give identical data.
    pub seed: u64,
    /// Prefix of entity ids: `"{prefix}.m01.temperature"`, `"{prefix}.m01.vibration"`, ...
    pub entity_prefix: String,
    /// Inject labelled anomalies (spike, level shift, stuck sensor, rising vibration).
    pub anomalies: bool,
    /// Mean spacing in event time between anomaly starts on each machine, in seconds.
    pub anomaly_every_s: u64,
    /// No anomaly starts before this many seconds of event time, so models can warm up.
    pub first_anomaly_after_s: u64,
    /// How fast simulated time runs relative to wall-clock time when the agent drives the
    /// simulator (1 = real time, 60 = one simulated minute per second).
    pub speedup: f64,
    /// Stop after this many simulated seconds (0 = run until the agent stops).
    pub duration_s: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            machines: 3,
            period_ms: 1000,
            seed: 7,
            entity_prefix: "sim".into(),
            anomalies: true,
            anomaly_every_s: 300,
            first_anomaly_after_s: 120,
            speedup: 1.0,
            duration_s: 0,
        }
    }
}

impl SimulatorConfig {
    /// Checks value ranges. `PlantSimulator::new` itself accepts any config.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=99).contains(&self.machines) {
            return Err(format!(
                "simulator.machines must be 1..=99, got {}",
                self.machines
            ));
        }
        if self.period_ms == 0 || self.anomaly_every_s == 0 {
            return Err("simulator.period_ms and simulator.anomaly_every_s must be > 0".into());
        }
        if !(self.speedup.is_finite() && self.speedup > 0.0) {
            return Err("simulator.speedup must be a positive number".into());
        }
        if self.entity_prefix.is_empty() {
            return Err("simulator.entity_prefix must not be empty".into());
        }
        Ok(())
    }
}

/// Kind of injected anomaly (ground-truth label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Spike,
    LevelShift,
    Stuck,
    RisingVibration,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 4] = [
        Self::Spike,
        Self::LevelShift,
        Self::Stuck,
        Self::RisingVibration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spike => "spike",
            Self::LevelShift => "level_shift",
            Self::Stuck => "stuck",
            Self::RisingVibration => "rising_vibration",
        }
    }
}

/// One sensor reading produced by [`PlantSimulator::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimSample {
    pub entity: Arc<str>,
    pub value: f64,
    /// `Some` iff an injected anomaly affects this sample.
    pub anomaly: Option<AnomalyKind>,
}

/// An anomaly that is active right now, for logging.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAnomaly {
    pub entity: Arc<str>,
    pub kind: AnomalyKind,
    pub started_ms: i64,
    /// Planned end in event time. `None` for spikes, which last 1–3 samples.
    pub ends_ms: Option<i64>,
}

const SENSORS: [&str; 3] = ["temperature", "vibration", "current"];
const TEMP: usize = 0;
const VIB: usize = 1;
const CUR: usize = 2;
const TEMP_SIGMA: f64 = 0.15;
const TEMP_TAU_S: f64 = 240.0;
const IDLE_RISE_C: f64 = 2.0;
const AMBIENT_MEAN_C: f64 = 22.0;
const AMBIENT_AMP_C: f64 = 3.0;
const AMBIENT_PERIOD_MS: f64 = 6.0 * 3600.0 * 1000.0;
const VIB_RUN: f64 = 1.2;
const VIB_IDLE: f64 = 0.15;
const VIB_LOG_SIGMA: f64 = 0.08;
const CUR_IDLE: f64 = 0.5;
const CUR_SIGMA_RUN: f64 = 0.3;
const CUR_SIGMA_IDLE: f64 = 0.05;
const RUN_MEAN_S: f64 = 240.0;
const IDLE_MEAN_S: f64 = 120.0;
const MIN_PHASE_S: f64 = 20.0;
const RISE_PER_S: f64 = 2.0 / 300.0;
const MIN_GAP_MS: i64 = 10_000;

/// Nominal noise sigma per sensor (at running load), used to size injected anomalies.
fn nominal_sigma(sensor: usize) -> f64 {
    [TEMP_SIGMA, VIB_RUN * VIB_LOG_SIGMA, CUR_SIGMA_RUN][sensor]
}

/// SplitMix64: tiny, fast, and good enough statistically for simulation noise.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    /// Standard normal via Box-Muller (one value per call; simpler to keep deterministic).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1], so ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }
}

#[derive(Debug, Clone)]
struct Active {
    kind: AnomalyKind,
    sensor: usize,
    started_ms: i64,
    ends_ms: Option<i64>,
    spike_left: u32,
    offset: f64,
    frozen: Option<f64>,
}

#[derive(Debug, Clone)]
struct Machine {
    ids: [Arc<str>; 3],
    phys: Rng,
    sched: Rng,
    running: bool,
    next_toggle_ms: i64,
    run_current: f64,
    heat_gain: f64,
    temp: f64,
    last_out: Option<[f64; 3]>,
    active: Option<Active>,
    next_anomaly_ms: i64,
}

impl Machine {
    fn phase_ms(&mut self, running: bool) -> i64 {
        let mean = if running { RUN_MEAN_S } else { IDLE_MEAN_S };
        ((MIN_PHASE_S + self.phys.exp(mean - MIN_PHASE_S)) * 1000.0) as i64
    }
}

/// The deterministic plant simulator. See the module docs.
#[derive(Debug, Clone)]
pub struct PlantSimulator {
    machines: Vec<Machine>,
    last_ms: i64,
    anomalies: bool,
    every_ms: i64,
    ambient_phase: f64,
}

impl PlantSimulator {
    pub fn new(cfg: &SimulatorConfig, start_ms: i64) -> Self {
        let ambient_phase = Rng::new(cfg.seed, 0).range(0.0, TAU);
        let every_ms = (cfg.anomaly_every_s.max(1) as i64).saturating_mul(1000);
        let first_ms =
            start_ms.saturating_add((cfg.first_anomaly_after_s as i64).saturating_mul(1000));
        let mut sim = Self {
            machines: Vec::new(),
            last_ms: start_ms,
            anomalies: cfg.anomalies,
            every_ms,
            ambient_phase,
        };
        for i in 0..cfg.machines as u64 {
            let ids = SENSORS
                .map(|s| Arc::<str>::from(format!("{}.m{:02}.{s}", cfg.entity_prefix, i + 1)));
            let mut phys = Rng::new(cfg.seed, 2 * i + 1);
            let mut sched = Rng::new(cfg.seed, 2 * i + 2);
            let running = phys.uniform() < 0.6;
            let (run_current, heat_gain) = (phys.range(11.0, 13.0), phys.range(30.0, 40.0));
            let rise = if running { heat_gain } else { IDLE_RISE_C };
            let next_anomaly_ms = first_ms + (sched.uniform() * every_ms as f64) as i64;
            let mut m = Machine {
                ids,
                phys,
                sched,
                running,
                next_toggle_ms: start_ms,
                run_current,
                heat_gain,
                temp: sim.ambient(start_ms) + rise,
                last_out: None,
                active: None,
                next_anomaly_ms,
            };
            // Start part-way through the first phase.
            m.next_toggle_ms = start_ms + (m.phase_ms(running) as f64 * m.phys.uniform()) as i64;
            sim.machines.push(m);
        }
        sim
    }

    fn ambient(&self, t_ms: i64) -> f64 {
        AMBIENT_MEAN_C
            + AMBIENT_AMP_C * (TAU * t_ms as f64 / AMBIENT_PERIOD_MS + self.ambient_phase).sin()
    }

    /// Entity ids in the order `step` emits them.
    pub fn entities(&self) -> Vec<String> {
        self.machines
            .iter()
            .flat_map(|m| m.ids.iter().map(|id| id.to_string()))
            .collect()
    }

    /// Anomalies active after the last `step`.
    pub fn active_anomalies(&self) -> impl Iterator<Item = ActiveAnomaly> + '_ {
        self.machines.iter().filter_map(|m| {
            m.active.as_ref().map(|a| ActiveAnomaly {
                entity: m.ids[a.sensor].clone(),
                kind: a.kind,
                started_ms: a.started_ms,
                ends_ms: a.ends_ms,
            })
        })
    }

    /// Advances to `event_time_ms` and appends one sample per sensor (3 per machine) to `out`.
    pub fn step(&mut self, event_time_ms: i64, out: &mut Vec<SimSample>) {
        let t = event_time_ms;
        let dt_s = (t - self.last_ms).max(0) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(t);
        let ambient = self.ambient(t);
        let lag = 1.0 - (-dt_s / TEMP_TAU_S).exp();
        for m in &mut self.machines {
            // Physics: always drawn in the same order, independent of anomalies.
            while t >= m.next_toggle_ms {
                m.running = !m.running;
                let len = m.phase_ms(m.running);
                m.next_toggle_ms += len;
            }
            let target = ambient + if m.running { m.heat_gain } else { IDLE_RISE_C };
            m.temp += (target - m.temp) * lag;
            let temp = m.temp + TEMP_SIGMA * m.phys.normal();
            let vib_level = if m.running { VIB_RUN } else { VIB_IDLE };
            let vib = vib_level * (VIB_LOG_SIGMA * m.phys.normal()).exp();
            let cur = if m.running {
                m.run_current + CUR_SIGMA_RUN * m.phys.normal()
            } else {
                CUR_IDLE + CUR_SIGMA_IDLE * m.phys.normal()
            };
            let mut clean = [0.0; 3];
            (clean[TEMP], clean[VIB], clean[CUR]) = (temp, vib, cur.max(0.0));

            if self.anomalies {
                schedule(m, t, self.every_ms);
            }
            let mut values = clean;
            let mut labels = [None; 3];
            if let Some(a) = m.active.as_mut() {
                let s = a.sensor;
                values[s] = match a.kind {
                    AnomalyKind::Spike => {
                        a.spike_left = a.spike_left.saturating_sub(1);
                        clean[s] + a.offset
                    }
                    AnomalyKind::LevelShift => clean[s] + a.offset,
                    AnomalyKind::Stuck => *a.frozen.get_or_insert(clean[s]),
                    AnomalyKind::RisingVibration => {
                        clean[s] * (1.0 + RISE_PER_S * (t - a.started_ms) as f64 / 1000.0)
                    }
                };
                if s != TEMP {
                    values[s] = values[s].max(0.0);
                }
                labels[s] = Some(a.kind);
            }
            m.last_out = Some(values);
            for s in 0..3 {
                out.push(SimSample {
                    entity: m.ids[s].clone(),
                    value: values[s],
                    anomaly: labels[s],
                });
            }
        }
    }
}

/// Ends the current anomaly if it is over, and starts the next one if it is due.
fn schedule(m: &mut Machine, t: i64, every_ms: i64) {
    if let Some(a) = &m.active {
        let over = match a.ends_ms {
            Some(end) => t >= end,
            None => a.spike_left == 0,
        };
        if over {
            let gap = (every_ms as f64 * m.sched.range(0.5, 1.5)) as i64;
            m.next_anomaly_ms = (a.started_ms + gap).max(t + MIN_GAP_MS);
            m.active = None;
        }
    }
    if m.active.is_some() || t < m.next_anomaly_ms {
        return;
    }
    let r = &mut m.sched;
    let kind = AnomalyKind::ALL[(r.next_u64() % 4) as usize];
    let sensor = if kind == AnomalyKind::RisingVibration {
        VIB
    } else {
        (r.next_u64() % 3) as usize
    };
    let sign = if sensor == TEMP && r.uniform() < 0.5 {
        -1.0
    } else {
        1.0
    };
    let sigma = nominal_sigma(sensor);
    let secs = |r: &mut Rng, lo: f64, hi: f64| Some(t + (r.range(lo, hi) * 1000.0) as i64);
    let (ends_ms, spike_left, offset) = match kind {
        AnomalyKind::Spike => (
            None,
            1 + (r.next_u64() % 3) as u32,
            sign * sigma * r.range(8.0, 12.0),
        ),
        AnomalyKind::LevelShift => (secs(r, 45.0, 90.0), 0, sign * sigma * r.range(5.0, 8.0)),
        AnomalyKind::Stuck => (secs(r, 60.0, 180.0), 0, 0.0),
        AnomalyKind::RisingVibration => (secs(r, 180.0, 480.0), 0, 0.0),
    };
    let frozen = m.last_out.map(|v| v[sensor]);
    m.active = Some(Active {
        kind,
        sensor,
        started_ms: t,
        ends_ms,
        spike_left,
        offset,
        frozen,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn cfg(anomalies: bool) -> SimulatorConfig {
        SimulatorConfig {
            anomalies,
            anomaly_every_s: 240,
            first_anomaly_after_s: 60,
            ..Default::default()
        }
    }

    /// Runs `ticks` 1 s ticks and returns one sample vector per tick.
    fn run(c: &SimulatorConfig, ticks: i64) -> Vec<Vec<SimSample>> {
        let mut sim = PlantSimulator::new(c, T0);
        (1..=ticks)
            .map(|k| {
                let mut out = Vec::new();
                sim.step(T0 + k * 1000, &mut out);
                out
            })
            .collect()
    }

    #[test]
    fn deterministic_and_finite() {
        let a = run(&cfg(true), 3000);
        assert_eq!(a, run(&cfg(true), 3000));
        assert_ne!(
            a,
            run(
                &SimulatorConfig {
                    seed: 8,
                    ..cfg(true)
                },
                3000
            )
        );
        assert!(a.iter().flatten().all(|s| s.value.is_finite()));
        // Irregular, backwards and huge time jumps stay finite.
        let mut sim = PlantSimulator::new(&cfg(true), T0);
        let mut out = Vec::new();
        for t in [
            T0,
            T0 - 5_000,
            T0 + 86_400_000,
            T0 + 86_400_001,
            T0 + 400 * 86_400_000,
        ] {
            sim.step(t, &mut out);
        }
        assert!(out
            .iter()
            .all(|s| s.value.is_finite() && (s.value >= 0.0 || s.entity.ends_with("temperature"))));
    }

    #[test]
    fn entities_and_layout() {
        let sim = PlantSimulator::new(&SimulatorConfig::default(), T0);
        let e = sim.entities();
        assert_eq!(e.len(), 9);
        assert_eq!(e[0], "sim.m01.temperature");
        assert_eq!(e[8], "sim.m03.current");
        let ticks = run(&SimulatorConfig::default(), 2);
        assert!(ticks[1].iter().map(|s| s.entity.to_string()).eq(e));
        assert!(toml::from_str::<SimulatorConfig>("machines = 2\nbogus = 1").is_err());
        assert!(SimulatorConfig {
            machines: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn disabled_means_no_labels_and_labels_cover_all_deviations() {
        let (on, off) = (run(&cfg(true), 6000), run(&cfg(false), 6000));
        assert!(off.iter().flatten().all(|s| s.anomaly.is_none()));
        for (a, b) in on.iter().flatten().zip(off.iter().flatten()) {
            if a.anomaly.is_none() {
                assert_eq!(a.value, b.value, "unlabelled deviation at {}", a.entity);
            }
        }
        // No anomaly before first_anomaly_after_s.
        assert!(on[..59].iter().flatten().all(|s| s.anomaly.is_none()));
        for k in AnomalyKind::ALL {
            assert!(
                on.iter().flatten().any(|s| s.anomaly == Some(k)),
                "{k:?} never injected"
            );
        }
    }

    #[test]
    fn spike_exceeds_five_sigma() {
        let (on, off) = (run(&cfg(true), 20000), run(&cfg(false), 20000));
        let mut n = 0;
        for (a, b) in on.iter().flatten().zip(off.iter().flatten()) {
            if a.anomaly == Some(AnomalyKind::Spike) {
                let s = SENSORS.iter().position(|s| a.entity.ends_with(s)).unwrap();
                assert!(
                    (a.value - b.value).abs() > 5.0 * nominal_sigma(s),
                    "{a:?} vs {b:?}"
                );
                n += 1;
            }
        }
        assert!(n > 0);
        // The nominal sigma really is the noise level: running current noise in the clean run.
        let cur: Vec<f64> = off
            .iter()
            .map(|t| t[CUR].value)
            .filter(|v| *v > 5.0)
            .collect();
        let diffs: Vec<f64> = cur
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|d| d.abs() < 3.0)
            .collect();
        let sd = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64 / 2.0).sqrt();
        assert!(
            (sd - CUR_SIGMA_RUN).abs() < 0.05,
            "running current noise sd {sd}"
        );
    }

    #[test]
    fn stuck_repeats_value() {
        let on = run(&cfg(true), 20000);
        let mut pairs = 0;
        for i in 0..on[0].len() {
            for w in on.windows(2) {
                let (a, b) = (&w[0][i], &w[1][i]);
                if a.anomaly == Some(AnomalyKind::Stuck) && b.anomaly == Some(AnomalyKind::Stuck) {
                    assert_eq!(a.value, b.value);
                    pairs += 1;
                }
            }
        }
        assert!(pairs > 50, "only {pairs} stuck pairs");
    }

    #[test]
    fn rising_vibration_ramps_up() {
        let (on, off) = (run(&cfg(true), 20000), run(&cfg(false), 20000));
        let mut episodes = 0;
        for i in (VIB..on[0].len()).step_by(3) {
            // Collect (on, off) pairs of each contiguous RisingVibration episode.
            let mut ep: Vec<(f64, f64)> = Vec::new();
            for (a, b) in on
                .iter()
                .zip(&off)
                .chain(std::iter::once((&on[0], &off[0])))
            {
                if a[i].anomaly == Some(AnomalyKind::RisingVibration) {
                    ep.push((a[i].value, b[i].value));
                } else if ep.len() >= 60 {
                    let q = ep.len() / 4;
                    let mean = |s: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
                        s.iter().map(f).sum::<f64>() / s.len() as f64
                    };
                    let gain = |s: &[(f64, f64)]| mean(s, |p| p.0) / mean(s, |p| p.1);
                    let (first, last) = (gain(&ep[..q]), gain(&ep[ep.len() - q..]));
                    assert!(last > first + 0.5, "gain {first} -> {last}");
                    assert!(
                        mean(&ep[ep.len() - q..], |p| p.0)
                            > 1.5 * mean(&ep[ep.len() - q..], |p| p.1)
                    );
                    episodes += 1;
                    ep.clear();
                } else {
                    ep.clear();
                }
            }
        }
        assert!(episodes > 0);
    }

    #[test]
    fn current_has_run_and_idle_regimes() {
        let off = run(&cfg(false), 20000);
        let cur: Vec<f64> = off
            .iter()
            .flat_map(|t| (CUR..t.len()).step_by(3).map(move |i| t[i].value))
            .collect();
        let frac = |f: &dyn Fn(f64) -> bool| {
            cur.iter().filter(|v| f(**v)).count() as f64 / cur.len() as f64
        };
        let (idle, run_, mid) = (
            frac(&|v| v < 1.0),
            frac(&|v| v > 9.0),
            frac(&|v| (2.0..8.0).contains(&v)),
        );
        assert!(
            idle > 0.15 && run_ > 0.4 && mid < 0.001,
            "idle {idle} run {run_} mid {mid}"
        );
        // Temperature follows load: mean while running exceeds mean while idle.
        let (mut hot, mut cold) = (Vec::new(), Vec::new());
        for t in &off {
            if t[CUR].value > 5.0 {
                hot.push(t[TEMP].value)
            } else {
                cold.push(t[TEMP].value)
            }
        }
        let m = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            m(&hot) > m(&cold) + 5.0,
            "hot {} cold {}",
            m(&hot),
            m(&cold)
        );
    }
}
