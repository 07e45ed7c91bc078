//! Asset-level multivariate scoring with the shipped `skab-ae` model: the live agent joins an
//! asset's channels arriving over MQTT (real Mosquitto) and scores the asset; `vigil eval skab`
//! replays a tiny SKAB-format corpus written by the test (CI has no benchmark data) and reports
//! F1 / FAR / MAR per group.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_uplink::{Body, Envelope, Stats};
use support::*;
use vigil_test_harness::{AgentProcess, Mosquitto, MosquittoOptions};

/// The shipped multivariate model.
fn skab_model() -> PathBuf {
    repo_root().join("models/skab-ae/1.0.0")
}

const CHANNELS: [&str; 8] = [
    "Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple", "Voltage",
    "Volume Flow RateRMS",
];
/// Levels and noise of SKAB's pump channels (roughly valve1's).
const LEVEL: [f64; 8] = [0.027, 0.041, 0.95, 0.07, 69.0, 24.8, 230.0, 32.0];
const NOISE: [f64; 8] = [0.0003, 0.0006, 0.27, 0.25, 0.15, 0.012, 11.0, 0.4];

/// Row `i` of a pump whose flow (channel 7) drops by 5 units (about 12 noise sd) on `drop`.
fn pump_row(rng: &mut Rng, i: usize, drop: &std::ops::Range<usize>) -> [f64; 8] {
    pump_row_dropping(rng, i, drop, 5.0, 0.0)
}

/// [`pump_row`] with a flow drop of `by` units; with `shared > 0` the channels' noise is that
/// share of one common load factor (a pump's current, pressure, flow … follow its load) plus
/// `1 − shared` of their own.
fn pump_row_dropping(rng: &mut Rng, i: usize, drop: &std::ops::Range<usize>, by: f64, shared: f64) -> [f64; 8] {
    let mut row = [0.0; 8];
    let load = if shared > 0.0 { rng.unit() } else { 0.0 };
    for c in 0..8 {
        row[c] = LEVEL[c] + NOISE[c] * 1.7 * (shared * load + (1.0 - shared) * rng.unit());
    }
    if drop.contains(&i) {
        row[7] -= by;
    }
    row
}

/// The pump's 8 channel entities, `pump.c0` … `pump.c7`.
fn pump_channels() -> Vec<String> {
    (0..8).map(|c| format!("pump.c{c}")).collect()
}

/// An agent scoring the asset `pump` (channels [`pump_channels`]) with the shipped multivariate
/// model on 16 s windows every second, with `lateness_ms` of allowed lateness (it must cover the
/// publishing order: one channel after the other); `asset_extra` is appended to the asset's
/// table, `extra` (e.g. a `[pipeline.session]` table) before it.
fn start_pump_agent(broker: &Mosquitto, id: &str, lateness_ms: u64, extra: &str, asset_extra: &str) -> PlantAgent {
    let list = pump_channels().iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    PlantAgent::start_with(broker, id, |config| {
        let config = config
            .replace(&q(model_dir()), &q(skab_model()))
            .replace(&format!("size_ms = {SIZE_MS}"), "size_ms = 16000")
            .replace(&format!("hop_ms = {HOP_MS}"), "hop_ms = 1000")
            .replace("allowed_lateness_ms = 0", &format!("allowed_lateness_ms = {lateness_ms}"))
            // The shared config's explicit bands are the univariate model's: use the manifest's.
            .replace("review_threshold = 0.3\n", "")
            .replace("alert_threshold = 0.4\n", "");
        format!("{config}\n{extra}\n[[pipeline.assets]]\nid = \"pump\"\nchannels = [{list}]\n{asset_extra}")
    })
}

#[test]
fn the_live_agent_joins_an_assets_channels_and_scores_the_asset() {
    let broker = Mosquitto::start(MosquittoOptions::default()).expect("mosquitto");
    let channels = pump_channels();
    // The lateness bound covers the publishing order (every row of one channel, then the next):
    // windows close once every channel has arrived.
    let plant = start_pump_agent(&broker, "asset-live", 3_600_000, "", "");
    // Two hours ago on a whole second (event times must be within the validation skew).
    let t0 = (now_ms() - 7_200_000).div_euclid(1000) * 1000;
    let (n, drop) = (700usize, 560..700usize);
    let mut rng = Rng::new(5);
    let rows: Vec<[f64; 8]> = (0..n).map(|i| pump_row(&mut rng, i, &drop)).collect();
    for (c, entity) in channels.iter().enumerate() {
        let series: Vec<(i64, f64)> = rows.iter().enumerate().map(|(i, r)| (t0 + i as i64 * 1000, r[c])).collect();
        publish_series(&broker, entity, &series);
    }
    // One reading far ahead moves the asset's watermark past every published row.
    publish_series(&broker, &channels[0], &[(t0 + 3_700_000 + n as i64 * 1000, LEVEL[0])]);
    // Windows `(end − 16 s, end]` end on whole seconds; one ending at t0 + n s still holds row
    // n-1 (the last 15 rows).
    let last_end = t0 + n as i64 * 1000;
    let records = wait_for_outbox(&plant.outbox, Duration::from_secs(120), Some(&plant.agent), "the asset's last window scored", |r| {
        scores(r).iter().any(|(e, t, _)| e == "pump" && *t >= last_end)
    });
    let all = scores(&records);
    assert!(all.iter().all(|(e, _, _)| e == "pump"), "only the asset is scored by a multivariate model: {:?}", &all[..all.len().min(5)]);
    let pump: Vec<(i64, f64)> = all.iter().map(|(_, t, s)| (*t, *s)).collect();
    // Nothing before the warm-up (400 readings of every channel), then every second.
    let first = pump.iter().map(|p| p.0).min().unwrap();
    assert_eq!(first, t0 + 399 * 1000, "the first scored window ends at (and holds) the 400th reading");
    let row_of = |t: i64| ((t - t0) / 1000) as usize;
    let before: Vec<f64> = pump.iter().filter(|p| row_of(p.0) < drop.start).map(|p| p.1).collect();
    let during: Vec<f64> = pump.iter().filter(|p| row_of(p.0) >= drop.start + 16).map(|p| p.1).collect();
    assert!(!before.is_empty() && !during.is_empty());
    let mut sorted = before.clone();
    sorted.sort_by(f64::total_cmp);
    let median_before = sorted[sorted.len() / 2];
    let min_during = during.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(median_before < 0.5, "normal pump windows score below review: median {median_before}");
    assert!(min_during >= 0.5, "a closed valve (flow -12 sd) scores in review or above: min {min_during}");
    assert_no_panic(&plant.agent);
}

/// Publishes rows `range` of a pump to its 8 channel entities in chunks of 50 rows, one channel
/// after the other within a chunk (the asset's lateness must cover a chunk).
fn publish_pump_rows(broker: &Mosquitto, channels: &[String], t0: i64, rows: &[[f64; 8]], range: std::ops::Range<usize>) {
    let mut start = range.start;
    while start < range.end {
        let end = (start + 50).min(range.end);
        for (c, entity) in channels.iter().enumerate() {
            let series: Vec<(i64, f64)> = (start..end).map(|i| (t0 + i as i64 * 1000, rows[i][c])).collect();
            publish_series(broker, entity, &series);
        }
        start = end;
    }
}

/// Publishes `rows` (600) of the pump in two parts with a SIGKILL between: rows 0..500, then
/// — once the asset's windows pass row 430 — kills the agent, restarts it on the same config
/// and publishes rows 500..600. Returns what was out before the kill, everything out once the
/// last final window (row 539: the watermark stops at row 599 − 60 s) is scored, and the
/// restarted agent.
fn publish_with_a_crash(broker: &Mosquitto, plant: PlantAgent, id: &str, t0: i64, rows: &[[f64; 8]]) -> (Vec<Envelope>, Vec<Envelope>, AgentProcess, tempfile::TempDir) {
    let channels = pump_channels();
    let PlantAgent { dir, config, outbox, mut agent } = plant;
    publish_pump_rows(broker, &channels, t0, rows, 0..500);
    // Past the warm-up: windows up to t0 + 439 s are final (watermark = row 499 - 60 s).
    let scored_before = t0 + 430 * 1000;
    let before = wait_for_outbox(&outbox, Duration::from_secs(60), Some(&agent), "asset windows after the warm-up", |r| {
        scores(r).iter().any(|(e, t, _)| e == "pump" && *t >= scored_before)
    });
    // Another checkpoint interval (200 ms) is not awaited: the journal covers what it missed.
    agent.kill_9().unwrap();
    let from = broker.log_line_count();
    let agent2 = spawn_agent(&config);
    agent2.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent restarts");
    wait_for_subacks(broker, from, &format!("vigil-{id}"), 1);
    publish_pump_rows(broker, &channels, t0, rows, 500..rows.len());
    let last_end = t0 + 539 * 1000;
    let records = wait_for_outbox(&outbox, Duration::from_secs(120), Some(&agent2), "the asset scored after the restart", |r| {
        scores(r).iter().any(|(e, t, _)| e == "pump" && *t >= last_end)
    });
    (before, records, agent2, dir)
}

#[test]
fn an_assets_join_state_survives_a_crash_no_new_warmup_no_gap() {
    let broker = Mosquitto::start(MosquittoOptions::default()).expect("mosquitto");
    let plant = start_pump_agent(&broker, "asset-crash", 60_000, "", "");
    let t0 = (now_ms() - 7_200_000).div_euclid(1000) * 1000;
    let n = 600usize;
    let mut rng = Rng::new(9);
    let rows: Vec<[f64; 8]> = (0..n).map(|i| pump_row(&mut rng, i, &(n..n))).collect();
    let (before, records, agent2, _dir) = publish_with_a_crash(&broker, plant, "asset-crash", t0, &rows);
    let crash_point = scores(&before).iter().map(|s| s.1).max().unwrap();
    let last_end = t0 + 539 * 1000;
    // Without the restored baselines the asset would need another 400 readings per channel
    // before scoring again; with them every window after the crash point is scored, once.
    let ends: Vec<i64> = scores(&records).iter().filter(|s| s.0 == "pump").map(|s| s.1).collect();
    let unique: std::collections::BTreeSet<i64> = ends.iter().copied().collect();
    assert_eq!(unique.len(), ends.len(), "a window scored twice across the crash");
    let first = *unique.first().unwrap();
    assert_eq!(first, t0 + 399 * 1000, "scoring starts with the window holding the 400th reading");
    let expected: Vec<i64> = (0..).map(|k| first + k * 1000).take_while(|&w| w <= last_end).collect();
    let got: Vec<i64> = unique.iter().copied().filter(|&w| w <= last_end).collect();
    assert_eq!(got, expected, "every window from the warm-up to the end is scored (crash point {crash_point})");
    assert_no_panic(&agent2);
}

/// `[pipeline.warmup_pca]` in the live agent, across a SIGKILL after the fit: a pump whose
/// channels follow a common load, with a 2-sd flow drop from row 470, published over MQTT
/// (real Mosquitto) in two parts; the agent is killed after its windows pass row 430 and
/// restarted. Every live score equals what `vigil eval skab` computes on the same rows (the
/// restored fit and long view continue exactly), and the drop is in review while the model
/// alone would not flag it (the eval test above).
#[test]
fn the_live_warm_up_pca_scores_as_eval_does_across_a_crash() {
    let broker = Mosquitto::start(MosquittoOptions::default()).expect("mosquitto");
    let pca = "[pipeline.warmup_pca]\n";
    let plant = start_pump_agent(&broker, "asset-pca", 60_000, pca, "");
    let t0 = (now_ms() - 7_200_000).div_euclid(1000) * 1000;
    let (n, drop) = (600usize, 470..600usize);
    let mut rng = Rng::new(31);
    // Rounded as the CSV below writes them, so MQTT and the file carry the same numbers.
    let rows: Vec<[f64; 8]> = (0..n).map(|i| pump_row_dropping(&mut rng, i, &drop, 0.8, 0.9).map(|v| (v * 1e6).round() / 1e6)).collect();
    let (_, records, agent2, dir) = publish_with_a_crash(&broker, plant, "asset-pca", t0, &rows);
    let last_end = t0 + 539 * 1000;
    assert_no_panic(&agent2);
    let mut live = std::collections::BTreeMap::new();
    for (_, t, score) in scores(&records).into_iter().filter(|s| s.0 == "pump" && s.1 <= last_end) {
        let before = live.insert(t, score);
        assert!(before.is_none_or(|b| b == score), "window {t} scored twice, differently");
    }
    assert_eq!(live.len(), 141, "windows ending at rows 399..=539");

    let data = dir.path().join("skab");
    write_skab_rows(&data.join("pump/0.csv"), t0, &rows, Some(&drop));
    let out = dir.path().join("eval");
    eval_skab(&data, &skab_eval_config(dir.path(), "eval", pca), &out);
    let text = std::fs::read_to_string(out.join("pump/0.csv")).unwrap();
    // Row r's score is the window ending at row r (`datetime,score,band,alert,anomaly`).
    let eval: Vec<f64> = text.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap_or(f64::NAN)).collect();
    for (t, score) in &live {
        let row = ((t - t0) / 1000) as usize;
        assert!((score - eval[row]).abs() < 2e-6, "row {row}: live {score} vs eval {}", eval[row]);
    }
    let in_drop: Vec<f64> = live.iter().filter(|(t, _)| **t >= t0 + 505 * 1000).map(|p| *p.1).collect();
    assert!(!in_drop.is_empty() && in_drop.iter().all(|s| *s >= 0.5), "the drop is in review once the 32 s view holds it: {in_drop:?}");
}

/// Sessions per asset: the pump's motor current (its session channel) runs on rows 0..450 and
/// 470..530, off otherwise; the agent is SIGKILLed while the second run is open. Each run comes
/// out once as a `session` of the asset, with the current's statistics and the highest score
/// of the asset's windows overlapping it; no channel has sessions of its own (`entities = []`).
#[test]
fn an_assets_sessions_follow_its_session_channel_across_a_crash() {
    let broker = Mosquitto::start(MosquittoOptions::default()).expect("mosquitto");
    let channels = pump_channels();
    let session = "[pipeline.session]\nentities = []\nabove = 0.3\ngap_ms = 5000\n";
    let PlantAgent { dir: _dir, config, outbox, mut agent } =
        start_pump_agent(&broker, "asset-sessions", 60_000, session, "session_channel = \"pump.c2\"\n");
    let t0 = (now_ms() - 7_200_000).div_euclid(1000) * 1000;
    let n = 600usize;
    let on = |i: usize| i < 450 || (470..530).contains(&i);
    let mut rng = Rng::new(21);
    let rows: Vec<[f64; 8]> = (0..n)
        .map(|i| {
            let mut row = pump_row(&mut rng, i, &(n..n));
            if !on(i) {
                row[2] = 0.0;
            }
            row
        })
        .collect();
    // Rows 0..560: the asset's watermark reaches row 499 (lateness 60 s), so the first run is
    // closed and out, and the second is open (walked from row 470).
    publish_pump_rows(&broker, &channels, t0, &rows, 0..560);
    let session_ends = |r: &[Envelope]| -> Vec<(String, i64, i64)> {
        dedup(r.to_vec())
            .into_iter()
            .filter_map(|e| match e.body {
                Body::Session { entity, start_ms, end_ms, .. } => Some((entity, start_ms, end_ms)),
                _ => None,
            })
            .collect()
    };
    // A window ending after row 480 is scored once the watermark passed it: the walk has
    // opened the second run by then.
    wait_for_outbox(&outbox, Duration::from_secs(90), Some(&agent), "the first run's session, the second run open", |r| {
        !session_ends(r).is_empty() && scores(r).iter().any(|(e, t, _)| e == "pump" && *t >= t0 + 480_000)
    });
    agent.kill_9().unwrap();

    let from = broker.log_line_count();
    let agent2 = spawn_agent(&config);
    agent2.wait_for_line(|l| l.contains("MQTT connected"), Duration::from_secs(30)).expect("agent restarts");
    wait_for_subacks(&broker, from, "vigil-asset-sessions", 1);
    publish_pump_rows(&broker, &channels, t0, &rows, 560..n);
    // One reading far ahead moves the asset's watermark past the second run's close.
    publish_series(&broker, &channels[0], &[(t0 + 3_700_000, LEVEL[0])]);
    let records = wait_for_outbox(&outbox, Duration::from_secs(120), Some(&agent2), "both runs' sessions", |r| session_ends(r).len() >= 2);
    assert_no_panic(&agent2);

    let sessions: Vec<(String, i64, i64, Stats, Option<f64>)> = dedup(records.clone())
        .into_iter()
        .filter_map(|e| match e.body {
            Body::Session { entity, start_ms, end_ms, stats, max_score, .. } => Some((entity, start_ms - t0, end_ms - t0, stats, max_score)),
            _ => None,
        })
        .collect();
    let spans: Vec<(&str, i64, i64)> = sessions.iter().map(|s| (s.0.as_str(), s.1, s.2)).collect();
    assert_eq!(spans, vec![("pump", 0, 449_000), ("pump", 470_000, 529_000)], "each run once, as the asset's session, across the SIGKILL");
    let pump_scores: Vec<(i64, f64)> = scores(&records).into_iter().filter(|s| s.0 == "pump").map(|s| (s.1, s.2)).collect();
    for (_, start, end, stats, max_score) in &sessions {
        let current: Vec<f64> = ((*start / 1000) as usize..=(*end / 1000) as usize).map(|i| rows[i][2]).collect();
        assert_eq!(stats.count, current.len() as u64);
        let mean = current.iter().sum::<f64>() / current.len() as f64;
        assert!((stats.mean - mean).abs() < 1e-9, "the session channel's mean {} vs {mean}", stats.mean);
        assert_eq!((stats.first, stats.last), (current[0], *current.last().unwrap()));
        // The asset's windows `(e − 16 s, e]` ending in [start, end + window size) overlap the
        // session.
        let overlapping = pump_scores.iter().filter(|(w, _)| *w >= t0 + start && *w < t0 + end + 16_000).map(|s| s.1);
        let want = overlapping.fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
        assert!(want.is_some(), "asset windows were scored during the run from {start}");
        assert_eq!(*max_score, want, "max score of the asset's windows overlapping the run from {start}");
    }
}

/// Writes `<root>/<group>/<name>.csv` in SKAB's format (`;`, `datetime`, 8 channels, `anomaly`,
/// `changepoint`).
fn write_skab(path: &Path, n: usize, drop: std::ops::Range<usize>, seed: u64, labels: bool) {
    write_skab_dropping(path, n, drop, 5.0, 0.0, seed, labels)
}

/// [`write_skab`] with a flow drop of `by` units and a `shared` load factor ([`pump_row_dropping`]).
fn write_skab_dropping(path: &Path, n: usize, drop: std::ops::Range<usize>, by: f64, shared: f64, seed: u64, labels: bool) {
    let mut rng = Rng::new(seed);
    let rows: Vec<[f64; 8]> = (0..n).map(|i| pump_row_dropping(&mut rng, i, &drop, by, shared)).collect();
    write_skab_rows(path, 1_583_748_873_000, &rows, labels.then_some(&drop));
}

/// Writes `rows` (one per second from `t0`, ms) as a SKAB file; with `labels`, rows in that
/// range are the anomaly.
fn write_skab_rows(path: &Path, t0: i64, rows: &[[f64; 8]], labels: Option<&std::ops::Range<usize>>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = format!("datetime;{}", CHANNELS.join(";"));
    text.push_str(if labels.is_some() { ";anomaly;changepoint\n" } else { "\n" });
    for (i, row) in rows.iter().enumerate() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis((t0 + i as i64 * 1000) as u64);
        let ts = humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").trim_end_matches('Z').to_string();
        text.push_str(&ts);
        for v in row {
            text.push_str(&format!(";{v:.6}"));
        }
        if let Some(drop) = labels {
            let a = u8::from(drop.contains(&i));
            text.push_str(&format!(";{a}.0;{}.0", u8::from(i == drop.start || i == drop.end)));
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Writes `<dir>/<name>.toml`: an eval config scoring the asset `pump` (SKAB's column names)
/// with the shipped model, alerting at 0.5 with no hysteresis, plus `extra`.
fn skab_eval_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let list = CHANNELS.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[agent]\nid = \"skab-test\"\ndata_dir = {}\n\n[ingest.simulator]\nmachines = 1\n\n[[pipeline.assets]]\nid = \"pump\"\nchannels = [{list}]\n\n[inference]\nmodel_dir = {}\n\n[alerts]\nalert_threshold = 0.5\nraise_after = 1\nclear_after = 1\ncooldown_s = 0\nprint = false\n{extra}",
            q(dir.join("state")),
            q(skab_model())
        ),
    )
    .unwrap();
    path
}

/// Runs `vigil eval skab` on `data` with `config`, per-row results into `out`; returns stdout.
fn eval_skab(data: &Path, config: &Path, out: &Path) -> String {
    let o = vigil(&["eval", "skab", "--data", data.to_str().unwrap(), "-c", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "eval failed: {stdout}{}", String::from_utf8_lossy(&o.stderr));
    eprintln!("{stdout}");
    stdout
}

#[test]
fn eval_skab_reports_f1_far_mar_per_group_on_a_tiny_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("skab");
    write_skab(&data.join("pumpA/0.csv"), 900, 560..760, 1, true);
    write_skab(&data.join("pumpA/1.csv"), 900, 600..800, 2, true);
    write_skab(&data.join("pumpB/0.csv"), 900, 2000..2000, 3, true);
    write_skab(&data.join("anomaly-free/anomaly-free.csv"), 500, 0..0, 4, false);
    let config = skab_eval_config(dir.path(), "skab", "");
    let out = dir.path().join("results");
    let stdout = eval_skab(&data, &config, &out);
    assert!(stdout.contains("SKAB: 3 files, 2700 rows"), "{stdout}");
    assert!(stdout.contains("skipped (no `anomaly` column, training data): anomaly-free/anomaly-free.csv"), "{stdout}");
    let field = |line: &str, i: usize| -> f64 { line.split_whitespace().rev().nth(6 - i).unwrap().parse().unwrap() };
    let line = |name: &str| stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no `{name}` line")).to_string();
    // Columns from the right: F1 FAR MAR TP FP FN TN -> index 0..6.
    let a = line("group pumpA");
    assert!(field(&a, 0) > 0.8, "pumpA F1: {a}");
    assert!(field(&a, 1) < 10.0, "pumpA FAR %: {a}");
    let b = line("group pumpB");
    assert_eq!(field(&b, 3) + field(&b, 5), 0.0, "pumpB has nothing to find: {b}");
    assert!(field(&b, 1) < 5.0, "pumpB FAR %: {b}");
    let overall = line("overall");
    // Test rows only: 3 files x (900 - 400).
    let test_rows: f64 = (3..7).map(|i| field(&overall, i)).sum();
    assert_eq!(test_rows, 1500.0, "{overall}");
    // Per-row results: one per data row, nothing scored during the 400-row warm-up; row 399
    // closes the first window, which holds the 400th reading.
    let text = std::fs::read_to_string(out.join("pumpA/0.csv")).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 900);
    assert!(rows[..399].iter().all(|r| r.contains(",none,")), "warm-up rows unscored");
    assert!(!rows[399].contains(",none,"), "row 399 is scored: {}", rows[399]);
}

/// A replay row of an asset shows the windows *its* readings closed: when a row's first channel
/// cell is empty, the row cannot close the window ending at its second (that channel may still
/// report for it) and repeats the latest result; the next row closes that window and its own,
/// and must show only those, not the previous row's window too (found in review: it took the
/// higher of the two).
#[test]
fn an_asset_row_with_an_empty_first_cell_shows_only_the_windows_it_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = skab_eval_config(dir.path(), "replay", "");
    // A 900-row pump whose flow spikes by 40 units on row 600 only: the 16 windows holding it
    // score about twice the noise level, the first one after it drops back.
    let mut rng = Rng::new(9);
    let mut rows: Vec<[f64; 8]> = (0..900).map(|i| pump_row(&mut rng, i, &(0..0))).collect();
    rows[600][7] += 40.0;
    let replay = |name: &str, empty_first_cell_on: Option<usize>| -> Vec<f64> {
        let input = dir.path().join(format!("{name}.csv"));
        write_skab_rows(&input, 1_583_748_873_000, &rows, None);
        if let Some(r) = empty_first_cell_on {
            // Line r + 2 (header first): `datetime;c0;c1…` → `datetime;;c1…`.
            let text = std::fs::read_to_string(&input).unwrap();
            let lines: Vec<String> = text
                .lines()
                .enumerate()
                .map(|(i, l)| match i == r + 1 {
                    true => {
                        let mut cells: Vec<&str> = l.split(';').collect();
                        cells[1] = "";
                        cells.join(";")
                    }
                    false => l.to_string(),
                })
                .collect();
            std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        }
        let out = dir.path().join(format!("{name}-scores.csv"));
        let o = vigil(&["replay", "-c", config.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--separator", ";"]);
        assert!(o.status.success(), "replay failed: {}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(out).unwrap();
        text.lines().skip(1).map(|l| l.split(',').nth_back(2).unwrap().parse().unwrap()).collect()
    };
    let full = replay("full", None);
    assert_eq!(full.len(), 900);
    // The row where the score falls most: the spike has just left the window.
    let edge = (601..900).max_by(|&a, &b| (full[a - 1] - full[a]).total_cmp(&(full[b - 1] - full[b]))).unwrap();
    let fall = full[edge - 1] - full[edge];
    assert!(fall > 0.1, "score falls by {fall} at row {edge}: {:?}", &full[595..625]);
    // The same file with that row's first cell empty: the row repeats the previous row's
    // result; the next row's windows barely change (the channel holds its previous value for
    // that second), and the previous row's high score must not show on it.
    let gap = replay("gap", Some(edge));
    assert_eq!(gap[edge], full[edge - 1], "row {edge} closes no window: it repeats the latest result");
    let own = full[edge].max(full[edge + 1]);
    assert!((gap[edge + 1] - own).abs() < fall / 4.0, "row {}: {} with the empty cell before, {own} without (row {}: {})", edge + 1, gap[edge + 1], edge - 1, full[edge - 1]);
}

/// `[pipeline.warmup_pca]` through `vigil eval skab` (the live pipeline's code). The pump's
/// channels follow a common load (90 % of their noise); its flow drops by 0.8 units (about 2
/// noise sd per reading, the size of SKAB's hardest valve runs) for 240 / 260 s. The model
/// alone misses nearly all of it; the long view checked against the warm-up (the drop breaks
/// the channels' joint behaviour: Q) finds it, and a second run reproduces every row's score.
#[test]
fn eval_skab_with_the_warm_up_pca_finds_a_small_sustained_drop_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("skab");
    write_skab_dropping(&data.join("pump/0.csv"), 900, 560..800, 0.8, 0.9, 11, true);
    write_skab_dropping(&data.join("pump/1.csv"), 900, 500..760, 0.8, 0.9, 12, true);
    let run = |name: &str, extra: &str| -> (String, String) {
        let config = skab_eval_config(dir.path(), name, extra);
        let out = dir.path().join(name);
        let stdout = eval_skab(&data, &config, &out);
        let rows = std::fs::read_to_string(out.join("pump/0.csv")).unwrap() + &std::fs::read_to_string(out.join("pump/1.csv")).unwrap();
        (stdout.lines().find(|l| l.starts_with("overall")).expect("overall line").to_string(), rows)
    };
    // Columns from the right: F1 FAR MAR TP FP FN TN -> index 0..6.
    let field = |line: &str, i: usize| -> f64 { line.split_whitespace().rev().nth(6 - i).unwrap().parse().unwrap() };
    let (alone, _) = run("model", "");
    let pca = "\n[pipeline.warmup_pca]\n";
    let (with, rows) = run("pca", pca);
    assert!(field(&alone, 2) > 80.0, "the model alone misses the drop (MAR %): {alone}");
    assert!(field(&with, 2) < 20.0, "the long view finds it (MAR %): {with}");
    // The long view spans 32 s: for up to ~40 rows after each drop ends it still holds the
    // drop (2 files x 40 of 500 normal rows = 16 %).
    assert!(field(&with, 1) < 16.0, "false alarms only in the long view's wake (FAR %): {with}");
    let (again, rows_again) = run("pca-again", pca);
    assert_eq!(with, again);
    assert!(rows == rows_again, "every row's score and detection reproduce");
}

#[test]
fn assets_that_do_not_fit_the_model_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_config("assets-check", &dir.path().join("data"), &dir.path().join("outbox"))
        .replace(&q(model_dir()), &q(skab_model()))
        + "\n[ingest.simulator]\nmachines = 1\n";
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let o = vigil(&["check-config", path.to_str().unwrap()]);
        (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
    };
    let eight = (0..8).map(|c| format!("\"p.c{c}\"")).collect::<Vec<_>>().join(", ");
    let (ok, out) = check("ok.toml", &format!("{base}\n[[pipeline.assets]]\nid = \"p\"\nchannels = [{eight}]\n"));
    assert!(ok, "{out}");
    assert!(out.contains("asset p: 8 channels joined on one grid"), "{out}");
    let (ok, out) = check("none.toml", &base);
    assert!(!ok && out.contains("is multivariate") && out.contains("no [[pipeline.assets]]"), "{out}");
    let (ok, out) = check("two.toml", &format!("{base}\n[[pipeline.assets]]\nid = \"p\"\nchannels = [\"a\", \"b\"]\n"));
    assert!(!ok && out.contains("has 8 channels") && out.contains("asset `p` names 2"), "{out}");
    // A channel in two assets is a config error with file, line and key.
    let text = format!("{base}\n[[pipeline.assets]]\nid = \"p\"\nchannels = [{eight}]\n\n[[pipeline.assets]]\nid = \"q\"\nchannels = [\"p.c0\"]\n");
    let (ok, out) = check("dup.toml", &text);
    assert!(!ok && out.contains("pipeline.assets[1].channels") && out.contains("`p.c0`"), "{out}");
    // Raw readings around alerts follow entity alerts; this model alerts on assets.
    let text = format!("{base}\n[[pipeline.assets]]\nid = \"p\"\nchannels = [{eight}]\n\n[uplink.policy]\nreading = \"around_alerts\"\n");
    let (ok, out) = check("around.toml", &text);
    assert!(!ok && out.contains("around_alerts") && out.contains("multivariate"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}
