//! Implementations of the `vigil` subcommands that do not run the agent.

use std::fmt::Write as _;


use crate::agent::{load_model, thresholds, AgentError};
use crate::commit_log::replay_dead_letters;
use crate::config::Config;
use crate::dlq::Redecoder;
use crate::ingest::mqtt::Route;
use crate::reading::now_ms;
use crate::store::{self, DbContext};

/// Errors of the offline commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("no dead letter with id {0}")]
    NoSuchDlq(u64),
    #[error("config: {0}")]
    Config(String),
}

/// `vigil model-check DIR`: loads and golden-checks the model in `DIR` with the linked TF Lite
/// backend; returns one JSON object (`backend`, `tflite`, `arch`, `model`, `version`, the
/// [`GoldenReport`](crate::inference::GoldenReport) fields, `us_per_window`: the best of 20 runs
/// of the golden batch divided by its windows, and `scores`: the runtime's score of every golden
/// window, in order). Comparing `scores` across builds (x86_64 vs ARM under qemu)
/// is what `cross/check-golden.sh` does.
pub fn model_check(dir: &std::path::Path) -> Result<String, crate::inference::InferenceError> {
    use crate::inference::{backend, ModelRuntime};
    let (mut runtime, report) = ModelRuntime::load_verified(dir)?;
    let golden = runtime.golden().clone();
    let mut out = Vec::new();
    runtime.run_batch(&golden.flat_inputs(), golden.inputs.len(), &mut out)?;
    let width = runtime.input_width();
    // Inference cost: the golden batch run again (after the warm-up above), best of 20 runs,
    // per window. A figure for comparing builds (native vs qemu, backends), not a benchmark.
    let mut best = std::time::Duration::MAX;
    let mut scratch = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        runtime.run_batch(&golden.flat_inputs(), golden.inputs.len(), &mut scratch)?;
        best = best.min(t.elapsed());
    }
    let us_per_window = best.as_secs_f64() * 1e6 / golden.inputs.len().max(1) as f64;
    let scores: Vec<f64> =
        golden.inputs.iter().zip(out.chunks_exact(width)).map(|(z, r)| runtime.score(z, r)).collect();
    Ok(serde_json::json!({
        "backend": backend::NAME,
        "tflite": backend::version(),
        "arch": std::env::consts::ARCH,
        "model": runtime.name(),
        "version": runtime.version(),
        "windows": report.windows,
        "max_abs_diff": report.max_abs_diff,
        "mean_abs_diff": report.mean_abs_diff,
        "tolerance": report.tolerance,
        "max_score_diff": report.max_score_diff,
        "us_per_window": us_per_window,
        "scores": scores,
    })
    .to_string())
}

/// `vigil check-config`: validates (including loading and verifying the model) and prints the
/// effective pipeline.
pub fn check_config(config: &Config) -> Result<(), CliError> {
    let runtime = load_model(config)?;
    let t = thresholds(config, &runtime);
    let m = runtime.manifest();
    let mut s = String::new();
    let _ = writeln!(s, "config OK — agent `{}`, state in {}", config.agent.id, config.agent.data_dir.display());
    let _ = writeln!(s, "ingest:");
    if let Some(mqtt) = &config.mqtt {
        let tls = match &mqtt.tls {
            Some(t) if t.client_cert_file.is_some() => "mutual TLS",
            Some(_) => "TLS",
            None => "plain TCP",
        };
        let _ = writeln!(s, "  mqtt broker {}:{} ({tls}), clean_session={}, QoS 1 with acks after commit", mqtt.host, mqtt.port, mqtt.clean_session);
        for sub in &config.ingest.mqtt {
            let route = Route::new(sub, &config.validation).map_err(|e| CliError::Config(e.to_string()))?;
            let _ = writeln!(
                s,
                "  - subscribe {:<32} format={:?} entity={}",
                route.template.filter(),
                sub.format,
                sub.entity.as_deref().unwrap_or("<topic>")
            );
        }
    }
    for port in &config.ingest.serial {
        let _ = writeln!(
            s,
            "  serial {} at {} baud (8N1): firmware-bridge frames <= {} B, entity={}",
            port.port.display(),
            port.baud,
            port.max_frame_bytes,
            port.entity
        );
    }
    if let Some(sim) = &config.ingest.simulator {
        let _ = writeln!(s, "  simulator: {} machines × 3 sensors every {} ms, speedup {}", sim.machines, sim.period_ms, sim.speedup);
    }
    let v = &config.validation;
    let _ = writeln!(s, "validation: payload <= {} B, |value| <= {:e}, event time within -{} s / +{} s, known entities: {}", v.max_payload_bytes, v.max_abs_value, v.max_past_skew_s, v.max_future_skew_s, if v.known_entities.is_empty() { "any".to_string() } else { v.known_entities.len().to_string() });
    let p = &config.pipeline;
    for (device, link, group, points, requests) in crate::ingest::modbus::poll::describe(&config.ingest.modbus) {
        let _ = writeln!(s, "modbus: {device} ({link}) group {group}: {points} points in {requests} read requests per poll");
    }
    for r in &config.ingest.modbus.write_back {
        let _ = writeln!(s, "  write-back: alert on {} -> {} {} {} := {} (at most every {} s)", r.entity, r.device, r.table.as_str(), r.address, r.value, r.min_interval_s);
    }
    let _ = writeln!(s, "pipeline: {} workers (partitioned by entity hash), checkpoint every {} ms", p.workers, p.checkpoint_interval_ms);
    let _ = writeln!(
        s,
        "  sliding windows (end - size, end]: size {} ms, hop {} ms, offset {} ms, lateness {} ms, late readings: {:?}",
        p.window.size_ms,
        p.window.hop_ms,
        crate::pipeline::window::Geometry::from(&p.window).offset_ms,
        p.window.allowed_lateness_ms,
        p.window.late_policy
    );
    // A multivariate model needs matching assets: the same check as at start.
    crate::agent::asset_routing(config, m)?;
    if m.kind == crate::inference::manifest::ModelKind::Multivariate {
        for a in &p.assets {
            let _ = writeln!(s, "  asset {}: {} channels joined on one grid ({})", a.id, a.channels.len(), a.channels.join(", "));
        }
        if let Some(w) = &p.warmup_pca {
            let _ = writeln!(
                s,
                "  warm-up PCA: long view over {} windows ({} ms), components for {} of the variance, limits at the warm-up's q{}; e = {} x model error / error_scale + {} x (T2 + Q over limits)",
                w.windows,
                w.windows as u64 * p.window.size_ms,
                w.variance,
                w.limit_quantile,
                w.model_weight,
                w.weight
            );
        }
    } else {
        if !p.assets.is_empty() {
            let _ = writeln!(s, "  {} asset(s) configured but the model is univariate: assets are not joined", p.assets.len());
        }
        if p.warmup_pca.is_some() {
            let _ = writeln!(s, "  [pipeline.warmup_pca] is set but the model is univariate: it applies to asset windows only and is ignored");
        }
    }
    let _ = writeln!(s, "inference: {} {} (sha256 {}), width {}, micro-batches of <= {} windows / {} ms", m.name, m.version, m.sha256, runtime.input_width(), config.inference.max_batch, config.inference.max_wait_ms);
    let _ = writeln!(
        s,
        "  normalisation: {:?} (alpha {}, clip {}), score {:?}, warm-up {} readings",
        m.normalisation.method, m.normalisation.alpha, m.normalisation.clip, m.score.method, m.normalisation.warmup
    );
    let a = &config.alerts;
    let _ = writeln!(s, "alerts: review >= {}, alert >= {}, raise after {}, clear after {}, cooldown {} s", t.review, t.alert, a.raise_after, a.clear_after, a.cooldown_s);
    if a.score == crate::config::ScoreMode::Novelty {
        let _ = match a.novelty_horizon {
            0 => writeln!(s, "  score novelty: against every value an entity has shown"),
            n => writeln!(s, "  score novelty: against the values of the last {n} windows ({} s at the configured hop)", n as u64 * p.window.hop_ms / 1000),
        };
    }
    if config.mqtt.is_some() {
        let _ = writeln!(s, "  publish to `{}`, review events to `{}`", a.topic, a.review_topic);
    }
    for w in &a.webhook {
        let routes: Vec<String> = a
            .route
            .iter()
            .filter(|r| r.to.contains(&w.name))
            .map(|r| format!("{} of {}", r.kinds.join("/"), r.entities.join(",")))
            .collect();
        let _ = writeln!(s, "  webhook {} ({:?}, template {}): {}", w.name, w.kind, w.template, if routes.is_empty() { "no route sends to it".to_string() } else { routes.join("; ") });
    }
    if a.drift_psi > 0.0 {
        let _ = writeln!(s, "  model drift alert above PSI {} (after {} windows)", a.drift_psi, a.drift_min_windows);
    }
    let _ = writeln!(s, "uplink: outbox quota {}, when full: {:?}", if config.uplink.outbox.quota_bytes == 0 { "unlimited".to_string() } else { format!("{} B", config.uplink.outbox.quota_bytes) }, config.uplink.outbox.when_full);
    if let Some(d) = &config.uplink.directory {
        let _ = writeln!(s, "  directory sink: {}", d.path.display());
    }
    if let Some(k) = &config.uplink.kafka {
        let t = &k.topics;
        let topics: Vec<String> = [("reading", &t.reading), ("score", &t.score), ("alert", &t.alert), ("dlq", &t.dlq), ("heartbeat", &t.heartbeat)]
            .iter()
            .filter_map(|(kind, topic)| topic.as_ref().map(|topic| format!("{kind}->{topic}")))
            .collect();
        let _ = writeln!(
            s,
            "  kafka sink: {} ({}{}), {:?}/{:?}, topics {}",
            k.brokers.join(","),
            if k.tls.is_some() { "TLS" } else { "plaintext" },
            k.sasl.as_ref().map(|a| format!(", SASL {:?} as {}", a.mechanism, a.username)).unwrap_or_default(),
            k.encoding,
            k.compression,
            topics.join(" ")
        );
    }
    if let Some(b) = &config.uplink.s3 {
        let _ = writeln!(
            s,
            "  s3 sink: s3://{}/{}/site={}/agent={}/… at {}, objects <= {} records / {} s",
            b.bucket,
            b.prefix,
            b.site,
            config.agent.id,
            b.endpoint.as_deref().unwrap_or("AWS"),
            b.max_object_records,
            b.max_object_age_s
        );
    }
    if config.api.enabled {
        let _ = writeln!(
            s,
            "api: http://{}/ (metrics, health, JSON API, dashboard); state changes {}",
            config.api.listen,
            if config.api.token.is_some() { "need the bearer token" } else { "disabled (no api.token)" }
        );
    } else {
        let _ = writeln!(s, "api: disabled");
    }
    print!("{s}");
    Ok(())
}

fn open(config: &Config) -> Result<std::sync::Arc<redb::Database>, CliError> {
    Ok(store::open(&config.agent.data_dir)?)
}

/// `vigil audit`: one line per Modbus write-back decision.
pub fn audit_list(config: &Config) -> Result<(), CliError> {
    let db = open(config)?;
    let entries = store::audit_entries(&db)?;
    if entries.is_empty() {
        println!("audit log is empty");
    }
    for (id, a) in entries {
        println!(
            "{id:>6}  {}  rule {}  {} {} {} := {}  alert on {} (score {:.3}, window end {})  {}",
            a.at_ms, a.rule, a.device, a.table, a.address, a.value, a.entity, a.score, a.window_end_ms, a.outcome
        );
    }
    Ok(())
}

/// `vigil dlq list`
pub fn dlq_list(config: &Config, from: u64, limit: usize) -> Result<(), CliError> {
    let db = open(config)?;
    let entries = store::dlq_entries(&db, from, limit)?;
    if entries.is_empty() {
        println!("DLQ is empty");
    }
    for (id, e) in entries {
        println!("{id:>8}  {}  {:<9}  {:<15} {:<40} {} B  {}", e.received_ms, e.source.as_str(), e.reason.as_str(), e.topic, e.raw.len(), e.detail);
    }
    Ok(())
}

/// `vigil dlq show ID`
pub fn dlq_show(config: &Config, id: u64) -> Result<(), CliError> {
    let db = open(config)?;
    let (found, e) = store::dlq_entries(&db, id, 1)?.into_iter().next().ok_or(CliError::NoSuchDlq(id))?;
    if found != id {
        return Err(CliError::NoSuchDlq(id));
    }
    println!("id:       {id}");
    println!("received: {} ms", e.received_ms);
    println!("source:   {}", e.source.as_str());
    println!("topic:    {}", e.topic);
    println!("reason:   {}", e.reason);
    println!("detail:   {}", e.detail);
    println!("bytes:    {}", e.raw.len());
    println!("text:     {}", String::from_utf8_lossy(&e.raw).escape_debug());
    println!("hex:      {}", hex::encode(&e.raw));
    Ok(())
}

/// `vigil dlq replay`: see [`crate::dlq`]. On a stopped agent's state file; the running agent
/// replays through `POST /api/dlq/replay` (the same [`replay_dead_letters`]).
pub fn dlq_replay(config: &Config, only: Option<u64>) -> Result<(), CliError> {
    let db = open(config)?;
    let outbox = cloud_uplink::Outbox::open(db.clone(), config.agent.id.clone(), crate::agent::outbox_config(config))
        .map_err(store::StoreError::from)?;
    let redecoder = Redecoder::new(config).map_err(|e| CliError::Config(e.to_string()))?;
    let txn = db.begin_write().doing("replaying the DLQ")?;
    let outcome = {
        let mut dlq = txn.open_table(store::DLQ).doing("replaying the DLQ")?;
        let mut journal = txn.open_table(store::JOURNAL).doing("replaying the DLQ")?;
        let mut meta = txn.open_table(store::META).doing("replaying the DLQ")?;
        let mut next_seq = store::meta_get(&meta, store::NEXT_SEQ)?.max(1);
        let appender = outbox.appender(&txn).map_err(store::StoreError::from)?;
        let mut writer = crate::uplink_policy::PolicyWriter::new(crate::uplink_policy::UplinkPolicy::new(config), appender, &txn)?;
        let mut readings = Vec::new();
        let outcome = replay_dead_letters(&redecoder, only, now_ms(), &mut dlq, &mut journal, &mut writer, &mut next_seq, &mut readings)?;
        writer.finish()?;
        meta.insert(store::NEXT_SEQ, next_seq).doing("replaying the DLQ")?;
        outcome
    };
    txn.commit().doing("replaying the DLQ")?;
    println!(
        "replayed {} dead letters ({} readings) into the commit log (processed at the next start); {} still rejected, {} kept",
        outcome.replayed, outcome.readings, outcome.still_rejected, outcome.kept
    );
    Ok(())
}

/// `vigil uplink inspect FILE|-`: one JSON record per line on standard output. Reads the
/// directory sink's framed `.vrec` files and the S3 sink's zstd JSON-lines objects (recognised
/// by the zstd frame magic). A damaged `.vrec` record is reported on standard error with its
/// position and skipped; a truncated file ends with an error for its last record only.
pub fn uplink_inspect(files: &[std::path::PathBuf]) -> Result<(), String> {
    use std::io::{Read, Write};
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut damaged = 0usize;
    for path in files {
        let name = path.display();
        let mut bytes = Vec::new();
        if path.as_os_str() == "-" {
            std::io::stdin().lock().read_to_end(&mut bytes)
        } else {
            std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
        }
        .map_err(|e| format!("{name}: {e}"))?;
        let records: Vec<Result<cloud_uplink::Envelope, String>> = if bytes.starts_with(&ZSTD_MAGIC) {
            cloud_uplink::s3_sink::decode_object(&bytes).map_err(|e| format!("{name}: {e}"))?.into_iter().map(Ok).collect()
        } else {
            cloud_uplink::RecordReader::new(bytes.as_slice())
                .map_err(|e| format!("{name}: {e}"))?
                .map(|r| r.map_err(|e| e.to_string()))
                .collect()
        };
        for record in records {
            match record.and_then(|env| cloud_uplink::encode_json(&env).map_err(|e| e.to_string())) {
                Ok(json) => writeln!(out, "{json}").map_err(|e| e.to_string())?,
                Err(e) => {
                    damaged += 1;
                    eprintln!("{name}: {e}");
                }
            }
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    if damaged > 0 {
        return Err(format!("{damaged} damaged record(s)"));
    }
    Ok(())
}

/// `vigil uplink status`: the outbox of a stopped agent — per record kind the records waiting
/// and those dropped by the quota policy, the CBOR bytes ever appended (the uplink volume), per
/// sink its cursors and oldest undelivered record.
pub fn uplink_status(config: &Config) -> Result<(), CliError> {
    let db = open(config)?;
    let outbox = cloud_uplink::Outbox::open(db, config.agent.id.clone(), crate::agent::outbox_config(config))
        .map_err(store::StoreError::from)?;
    let stats = outbox.stats().map_err(store::StoreError::from)?;
    println!("outbox: {} B used of {} B quota, next seq {}", stats.used_bytes, stats.quota_bytes, stats.next_seq);
    println!("{:<10} {:>10} {:>12} {:>10} {:>14}", "kind", "waiting", "bytes", "dropped", "appended bytes");
    for c in &stats.classes {
        println!("{:<10} {:>10} {:>12} {:>10} {:>14}", c.class.as_str(), c.records, c.bytes, c.dropped, c.appended_bytes);
    }
    for s in &stats.sinks {
        let cursors: Vec<String> = s.cursors.iter().map(|(c, seq)| format!("{c}={seq}")).collect();
        let oldest = s.oldest_undelivered_age_ms.map_or("caught up".to_string(), |ms| format!("oldest undelivered {:.1} s old", ms as f64 / 1000.0));
        println!("sink {}: {oldest}; cursors {}", s.name, cursors.join(" "));
    }
    Ok(())
}

/// `vigil replay`: see [`crate::replay`]. Prints a summary (rows, windows, batches, rows/s) on
/// standard error.
pub fn replay(
    config: &Config,
    input: &std::path::Path,
    out: &std::path::Path,
    timestamp_column: Option<String>,
    entities: &[String],
    separator: char,
    window: crate::replay::WindowChoice,
) -> Result<(), String> {
    use std::io::Write;
    // The command line's pairs replace `replay.entities` (already validated at load).
    let columns = if entities.is_empty() {
        config.replay.entities.iter().map(|e| crate::replay::column_entity(e)).collect::<Result<Vec<_>, _>>()?
    } else {
        entities.iter().map(|e| crate::replay::column_entity(e).map_err(|m| format!("--entity {m}"))).collect::<Result<Vec<_>, _>>()?
    };
    if !separator.is_ascii() {
        return Err(format!("--separator {separator}: must be one ASCII character"));
    }
    let opts = crate::replay::ReplayOptions { timestamp_column, columns, separator: separator as u8, window };
    let mut replayer = crate::replay::Replayer::new(config).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let out_err = |e: std::io::Error| format!("{}: {e}", out.display());
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(out_err)?);
    let header = {
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?), &mut first)
            .map_err(|e| format!("{}: {e}", input.display()))?;
        first
    };
    let names: Vec<&str> = header.trim_end().split(separator).map(|s| s.trim().trim_matches('"')).collect();
    let ts = opts.timestamp_column.clone().unwrap_or_else(|| names.first().map(|s| s.to_string()).unwrap_or_default());
    let values: Vec<String> = if opts.columns.is_empty() {
        names.iter().filter(|n| **n != ts).map(|n| n.to_string()).collect()
    } else {
        opts.columns.iter().map(|(c, _)| c.clone()).collect()
    };
    writeln!(w, "{ts},{},score,band,alert", values.join(",")).map_err(out_err)?;
    let summary = replayer
        .replay(&input.display().to_string(), std::io::BufReader::new(file), &opts, |row| crate::replay::write_row(&mut w, row))
        .map_err(|e| e.to_string())?;
    w.flush().map_err(out_err)?;
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "replayed {} rows ({} readings, {} late) in {:.3} s ({:.0} rows/s): window {} ms / hop {} ms / offset {} ms, {} windows scored in {} batches",
        summary.rows,
        summary.readings,
        summary.late,
        secs,
        summary.rows as f64 / secs,
        summary.size_ms,
        summary.hop_ms,
        summary.offset_ms,
        summary.windows_scored,
        summary.batches
    );
    Ok(())
}

/// `vigil eval nab`: see [`crate::eval::run_nab`]. Prints one line per profile.
pub fn eval_nab(
    config: &Config,
    data: &std::path::Path,
    out: Option<&std::path::Path>,
    window: crate::replay::WindowChoice,
    half: Option<crate::eval::Half>,
    details: bool,
) -> Result<(), String> {
    let r = crate::eval::run_nab(config, data, out, window, half).map_err(|e| e.to_string())?;
    let secs = r.replay_time.as_secs_f64().max(1e-9);
    println!("NAB: {} files, {} rows, {} windows scored, replay {:.2} s ({:.0} rows/s)", r.files, r.rows, r.windows_scored, secs, r.rows as f64 / secs);
    println!("{:<20} {:>8} {:>10} {:>10} {:>9} {:>9} {:>8}", "profile", "score", "threshold", "raw", "null", "perfect", "windows");
    for s in &r.scores {
        println!(
            "{:<20} {:>8.2} {:>10.6} {:>10.3} {:>9.1} {:>9.1} {:>4}/{:<3} fp rows {}",
            s.profile.name, s.normalised, s.threshold, s.raw, s.null, s.perfect, s.windows_detected, s.windows, s.false_positive_rows
        );
    }
    if details {
        println!("per file at the standard threshold {:.6} (a hit's reward: 1 at its window's first row, 0.86 at the middle, 0 at the last; a miss's highest score; false-positive data rows, 0-based):", r.details_threshold);
        for f in &r.details {
            let windows: Vec<String> = f
                .windows
                .iter()
                .map(|w| match w.reward {
                    Some(reward) => format!("hit {reward:.2}"),
                    None => format!("miss (max {:.3})", w.max_score),
                })
                .collect();
            let rows: Vec<String> = f.false_positive_rows.iter().take(12).map(|r| r.to_string()).collect();
            let more = if f.false_positive_rows.len() > rows.len() { " …" } else { "" };
            println!(
                "{}: windows [{}]; fp rows {} [{}{more}]",
                f.name,
                windows.join(", "),
                f.false_positive_rows.len(),
                rows.join(" ")
            );
        }
    }
    Ok(())
}

/// `vigil eval skab`: see [`crate::eval::skab::run_skab`]. Prints one line per file, per group
/// and overall.
pub fn eval_skab(config: &Config, data: &std::path::Path, out: Option<&std::path::Path>, window: crate::replay::WindowChoice) -> Result<(), String> {
    let r = crate::eval::skab::run_skab(config, data, out, window).map_err(|e| e.to_string())?;
    let secs = r.replay_time.as_secs_f64().max(1e-9);
    println!("SKAB: {} files, {} rows, {} windows scored, replay {:.2} s ({:.0} rows/s)", r.files, r.rows, r.windows_scored, secs, r.rows as f64 / secs);
    if !r.skipped.is_empty() {
        println!("skipped (no `anomaly` column, training data): {}", r.skipped.join(", "));
    }
    println!("{:<24} {:>6} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6}", "file / group", "F1", "FAR %", "MAR %", "TP", "FP", "FN", "TN");
    let line = |name: &str, c: &crate::eval::skab::Counts| {
        println!(
            "{:<24} {:>6.3} {:>7.1} {:>7.1} {:>6} {:>6} {:>6} {:>6}",
            name, c.f1(), 100.0 * c.far(), 100.0 * c.mar(), c.tp, c.fp, c.fn_, c.tn
        )
    };
    for (name, c) in &r.per_file {
        line(name, c);
    }
    for (group, c) in &r.groups {
        line(&format!("group {group}"), c);
    }
    line("overall", &r.overall);
    Ok(())
}
