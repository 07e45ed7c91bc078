//! Dumps the built-in plant simulator's readings with their ground-truth anomaly labels as CSV
//! (`t_ms,entity,value,anomaly`), for evaluating models offline (`models/eval_demo.py`).
//!
//!     cargo run -p vigil-agent --example sim_dump -- SEED DURATION_S [MACHINES [START_MS]] > sim.csv
use vigil::ingest::simulator::{PlantSimulator, SimulatorConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seed: u64 = args.get(1).map_or(7, |s| s.parse().expect("seed"));
    let duration_s: u64 = args.get(2).map_or(1800, |s| s.parse().expect("duration_s"));
    let machines: u32 = args.get(3).map_or(3, |s| s.parse().expect("machines"));
    let cfg = SimulatorConfig { seed, machines, first_anomaly_after_s: 180, anomaly_every_s: 300, ..Default::default() };
    let start_ms: i64 = args.get(4).map_or(0, |s| s.parse().expect("start_ms"));
    let mut sim = PlantSimulator::new(&cfg, start_ms);
    let mut out = Vec::new();
    println!("t_ms,entity,value,anomaly");
    for tick in 0..duration_s {
        let t = start_ms + (tick * cfg.period_ms) as i64;
        out.clear();
        sim.step(t, &mut out);
        for s in &out {
            println!("{},{},{},{}", t, s.entity, s.value, s.anomaly.map_or("", |k| k.as_str()));
        }
    }
}
