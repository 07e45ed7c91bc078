//! Measures outbox append throughput: `append_batch` of 1000 readings per
//! durable commit, on a real redb file in a temp dir.
//!
//! `cargo run -p cloud-uplink --example append_throughput [batches]`

use std::sync::Arc;
use std::time::Instant;

use cloud_uplink::record::{Body, Quality};
use cloud_uplink::{Outbox, OutboxConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let batches: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50);
    const BATCH: u64 = 1000;
    let dir = tempfile::tempdir()?;
    let db = Arc::new(redb::Database::create(dir.path().join("bench.redb"))?);
    let config = OutboxConfig {
        quota_bytes: 4 << 30,
        ..OutboxConfig::default()
    };
    let outbox = Outbox::open(db, "bench-agent".into(), config)?;
    let body = |i: u64| Body::Reading {
        entity: format!("line1/sensor-{}", i % 64),
        value: i as f64 * 0.5,
        quality: Quality::Good,
        source: "mqtt:plant/line1".into(),
        ingest_time_ms: 1_700_000_000_000 + i as i64,
        source_seq: Some(i),
    };
    let start = Instant::now();
    for b in 0..batches {
        let records = (0..BATCH)
            .map(|i| (1_700_000_000_000 + i as i64, body(b * BATCH + i)))
            .collect();
        outbox.append_batch(records)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = batches * BATCH;
    let stats = outbox.stats()?;
    println!(
        "{n} records in {batches} durable commits of {BATCH}: {secs:.2} s, {:.0} records/s, {:.1} commits/s, {:.0} accounted bytes/record",
        n as f64 / secs,
        batches as f64 / secs,
        stats.used_bytes as f64 / n as f64
    );
    Ok(())
}
