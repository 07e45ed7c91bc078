//! `vigil replay` and `vigil eval nab` on small synthetic CSVs written by the tests (CI has no
//! benchmark data): one output row per input row, byte-identical output on a second run, the
//! injected anomaly scored highest and alerted, bad rows reported as `file:line`, and a tiny NAB
//! corpus scored end to end.

mod support;

use std::path::Path;

use support::*;

/// A replay config: the tests' model; an alert is raised on the first window scoring >= 0.6.
fn replay_config(dir: &Path) -> std::path::PathBuf {
    replay_config_scoring(dir, "model")
}

/// [`replay_config`] with `alerts.score = score`.
fn replay_config_scoring(dir: &Path, score: &str) -> std::path::PathBuf {
    let path = dir.join("replay.toml");
    let text = format!(
        "[agent]\nid = \"replay-test\"\ndata_dir = {}\n\n[ingest.simulator]\nmachines = 1\n\n[inference]\nmodel_dir = {}\nmax_batch = 16\n\n[alerts]\nscore = \"{score}\"\nalert_threshold = 0.6\nreview_threshold = 0.4\nraise_after = 1\nclear_after = 2\ncooldown_s = 0\nprint = false\n",
        q(dir.join("state")),
        q(model_dir())
    );
    std::fs::write(&path, text).unwrap();
    path
}

const T0_MS: i64 = 1_400_000_000_000;
/// NAB-like sampling: 5 minutes, with every 7th step a minute late (irregular).
fn timestamp(i: usize) -> i64 {
    T0_MS + i as i64 * 300_000 + if i % 7 == 3 { 60_000 } else { 0 }
}

fn iso(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").trim_end_matches('Z').to_string()
}

/// `n` rows of `timestamp,a,b`: two noisy daily-ish sines; `a` jumps by +40 at row `spike`.
fn write_csv(path: &Path, n: usize, spike: usize) -> Vec<String> {
    let mut rng = Rng::new(11);
    let mut text = String::from("timestamp,a,b\n");
    let mut stamps = Vec::with_capacity(n);
    for i in 0..n {
        let phase = i as f64 * std::f64::consts::TAU / 288.0;
        let mut a = 20.0 + 3.0 * phase.sin() + 0.2 * rng.unit();
        if i == spike {
            a += 40.0;
        }
        let b = 5.0 + phase.cos() + 0.1 * rng.unit();
        let ts = iso(timestamp(i));
        text.push_str(&format!("{ts},{a:.4},{b:.4}\n"));
        stamps.push(ts);
    }
    std::fs::write(path, text).unwrap();
    stamps
}

#[test]
fn replay_is_deterministic_one_row_per_input_row_and_finds_the_spike() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path());
    let input = dir.path().join("plant.csv");
    let (n, spike) = (900, 700);
    let stamps = write_csv(&input, n, spike);
    let run = |out: &str| {
        let out = dir.path().join(out);
        let o = vigil(&[
            "replay", "-c", config.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(),
            "--entity", "a=plant.a", "--entity", "b=plant.b",
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "replay failed: {stderr}");
        (std::fs::read(out).unwrap(), stderr)
    };
    let (first, stderr) = run("scores1.csv");
    let (second, _) = run("scores2.csv");
    assert!(first == second, "two replays of the same input differ");
    // The summary names the derived geometry: size = 32 median steps (5 min), hop = the steps'
    // resolution (1 min: every 7th step is a minute late), phase = the rows' (T0 mod 1 min).
    assert!(stderr.contains("window 9600000 ms / hop 60000 ms / offset 20000 ms"), "{stderr}");

    let text = String::from_utf8(first).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "timestamp,a,b,score,band,alert");
    assert_eq!(lines.len(), n + 1, "one output row per input row");
    let mut scores = Vec::with_capacity(n);
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 6, "{line}");
        assert_eq!(cells[0], stamps[i], "row {i} keeps its timestamp");
        let score: f64 = cells[3].parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{line}");
        assert!(["none", "normal", "review", "alert"].contains(&cells[4]), "{line}");
        scores.push((score, cells[4].to_string(), cells[5] == "1"));
    }
    // Warm-up: nothing is scored before the model's warm-up has passed.
    assert_eq!(scores[10].1, "none");
    let warmup = model_warmup();
    assert!(scores[warmup + 40].1 != "none", "scored after warm-up");
    // The first window holding the spike is closed by the spike's own row (on the replay's
    // grid); the spike stays in the windows of the next 31 rows (32 median steps): the highest
    // scores are there.
    let width = 32;
    let (argmax, max) = scores.iter().enumerate().fold((0, 0.0), |b, (i, s)| if s.0 > b.1 { (i, s.0) } else { b });
    assert!((spike..spike + width).contains(&argmax), "highest score at row {argmax} ({max}), spike at {spike}");
    let before = scores[warmup + 40..spike].iter().map(|s| s.0).fold(0.0, f64::max);
    assert!(max > before + 0.2, "spike {max} vs. normal {before}");
    assert_eq!(scores[argmax].1, "alert");
    assert!(scores[argmax].2, "alert raised at the spike");
    let raised_rows = scores.iter().filter(|s| s.2).count();
    assert!(raised_rows < n / 10, "{raised_rows} rows under an alert");
}

#[test]
fn novelty_score_marks_the_spike_on_one_row_and_stays_quiet_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config_scoring(dir.path(), "novelty");
    let input = dir.path().join("plant.csv");
    let (n, spike) = (900, 700);
    write_csv(&input, n, spike);
    let run = |out: &str| {
        let out = dir.path().join(out);
        let o = vigil(&[
            "replay", "-c", config.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(),
            "--entity", "a=plant.a", "--entity", "b=plant.b",
        ]);
        assert!(o.status.success(), "replay failed: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let text = run("novelty1.csv");
    assert!(text == run("novelty2.csv"), "two replays of the same input differ");
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let scores: Vec<f64> = rows.iter().map(|r| r[3].parse().unwrap()).collect();
    assert_eq!(scores.len(), n);
    // The ranges start at the first scored window: during the signal's first period (288 rows)
    // its own new highs and lows are new too (the README says so); judged after that.
    let first = rows.iter().position(|r| r[4] != "none").expect("scored rows");
    let settled = first + 288;
    assert!(settled < spike);
    // The window the spike is the newest reading of is closed by the spike's own row (it is on
    // the replay's grid): that row alone stands out (the +40 reading lies about 6 ranges beyond
    // everything seen: 0.99 of it, weighted by the maturity of a range that has taken in one
    // window per row since the first); the 31 further windows that still hold it score low,
    // because it is no longer new.
    let onset = scores[spike];
    let maturity = vigil::alerts::maturity((spike - first) as u64);
    assert!(maturity > 0.8 && onset > 0.95 * maturity, "onset {onset}, maturity {maturity}");
    let others = scores.iter().enumerate().skip(settled).filter(|(i, _)| *i != spike).map(|(_, s)| *s).fold(0.0, f64::max);
    assert!(others < 0.5, "highest score away from the onset: {others}");
    let after = scores[spike + 1..=spike + 31].iter().copied().fold(0.0, f64::max);
    assert!(after < 0.2, "score while the spike is still in the window: {after}");
}

/// A reading after a gap closes every window the gap left open. With the configured 5-minute
/// grid, a spike just before the gap and off the grid (so its own row closes no window holding
/// it) is new only in the first of them: the row after the gap closes that window and its own
/// (the ones between hold no new reading and are not emitted) and must show the spike.
#[test]
fn a_row_after_a_gap_shows_the_highest_score_of_the_windows_it_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config_scoring(dir.path(), "novelty");
    // The rows' 5-minute grid (T0 mod 5 min = 200 s), lateness 0.
    let text = std::fs::read_to_string(&config).unwrap() + "\n[pipeline.window]\nsize_ms = 9600000\nhop_ms = 300000\noffset_ms = 200000\nallowed_lateness_ms = 0\n";
    std::fs::write(&config, text).unwrap();
    let input = dir.path().join("gap.csv");
    let (n, spike) = (900, 700);
    write_csv(&input, n, spike);
    // The spike one minute late (off the 5-minute grid), then three hours without readings:
    // longer than a window (32 × 5 min); the windows the gap leaves open hold the spike, but
    // only the first finds it new.
    let gap_ms = 3 * 3_600_000;
    let text = std::fs::read_to_string(&input).unwrap();
    let shifted: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(line, l)| match line.checked_sub(1) {
            Some(i) if i == spike => format!("{}{}", iso(timestamp(i) + 60_000), &l[l.find(',').unwrap()..]),
            Some(i) if i > spike => format!("{}{}", iso(timestamp(i) + gap_ms), &l[l.find(',').unwrap()..]),
            _ => l.to_string(),
        })
        .collect();
    std::fs::write(&input, shifted.join("\n") + "\n").unwrap();
    let out = dir.path().join("gap-scores.csv");
    let o = vigil(&["replay", "-c", config.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--window", "config"]);
    assert!(o.status.success(), "replay failed: {}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), n);
    let scores: Vec<f64> = rows.iter().map(|r| r[3].parse().unwrap()).collect();
    let first = rows.iter().position(|r| r[4] != "none").expect("scored rows");
    let maturity = vigil::alerts::maturity((spike + 1 - first) as u64);
    let after_gap = scores[spike + 1];
    assert!(maturity > 0.8 && after_gap > 0.95 * maturity, "row after the gap {after_gap}, maturity {maturity}");
    // It is the row that closed the spike's windows, not a row before the gap.
    assert!(scores[spike] < 0.5, "the spike's own row scores {}", scores[spike]);
    // The alert the spike raised (raise_after 1) shows on that row, with its band.
    let row: &Vec<&str> = &rows[spike + 1];
    assert_eq!((row[4], row[5]), ("alert", "1"), "row after the gap: {row:?}");
}

#[test]
fn the_config_maps_columns_to_entities_and_the_command_line_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[replay]\nentities = [\"b=plant.b\"]\n");
    std::fs::write(&config, &text).unwrap();
    let input = dir.path().join("plant.csv");
    write_csv(&input, 300, usize::MAX);
    let header = |extra: &[&str]| {
        let out = dir.path().join("out.csv");
        let mut args = vec!["replay", "-c", config.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = vigil(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(&out).unwrap().lines().next().unwrap().to_string()
    };
    // Only the mapped column is replayed; `--entity` replaces the config's list.
    assert_eq!(header(&[]), "timestamp,b,score,band,alert");
    assert_eq!(header(&["--entity", "a=plant.a"]), "timestamp,a,score,band,alert");
    // A malformed pair is a config error naming the key.
    std::fs::write(&config, text.replace("\"b=plant.b\"", "\"b\"")).unwrap();
    let out = dir.path().join("bad.csv");
    let o = vigil(&["replay", "-c", config.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("replay.entities[0]") && stderr.contains("expected COLUMN=ENTITY"), "{stderr}");
}

#[test]
fn a_bad_row_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path());
    let input = dir.path().join("bad.csv");
    let out = dir.path().join("out.csv");
    // Unparsable, not finite, and beyond `validation.max_abs_value` (default 1e30: what the
    // live sources dead-letter as `out_of_range`) on line 3.
    for (cell, reason) in [
        ("abc", "is not a number"),
        ("NaN", ": value is NaN"),
        ("3.4e38", ": value 3.4e38 exceeds validation.max_abs_value = 1e30"),
    ] {
        std::fs::write(&input, format!("timestamp,value\n2014-01-01 00:00:00,1.5\n2014-01-01 00:05:00,{cell}\n")).unwrap();
        let o = vigil(&["replay", "-c", config.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        let expected = format!("{}:3: value `{cell}` in column `value`{}{reason}", input.display(), if reason.starts_with(':') { "" } else { " " });
        assert!(stderr.contains(&expected), "expected `{expected}` in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn eval_nab_scores_a_tiny_corpus_and_writes_result_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path());
    let nab = dir.path().join("nab");
    std::fs::create_dir_all(nab.join("data/synthetic")).unwrap();
    std::fs::create_dir_all(nab.join("labels")).unwrap();
    // Two files in NAB's layout; one holds a labelled spike at row 700 (window rows 680..=720).
    let mut rows = Vec::new();
    for (name, spike) in [("spiky", 700), ("calm", usize::MAX)] {
        let path = nab.join(format!("data/synthetic/{name}.csv"));
        let stamps = write_csv(&path, 900, spike);
        // NAB files have a single `value` column.
        let text = std::fs::read_to_string(&path).unwrap();
        let single: String = text.lines().map(|l| l.rsplit_once(',').unwrap().0.replace("timestamp,a", "timestamp,value") + "\n").collect();
        std::fs::write(&path, single).unwrap();
        rows.push(stamps);
    }
    let labels = serde_json::json!({
        "synthetic/spiky.csv": [[format!("{}.000000", rows[0][680]), format!("{}.000000", rows[0][720])]],
        "synthetic/calm.csv": [],
    });
    std::fs::write(nab.join("labels/combined_windows.json"), labels.to_string()).unwrap();
    let out = dir.path().join("results");
    let o = vigil(&["eval", "nab", "--data", nab.to_str().unwrap(), "-c", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--details"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "eval failed: {stdout}{}", String::from_utf8_lossy(&o.stderr));
    eprintln!("{stdout}");
    assert!(stdout.contains("NAB: 2 files, 1800 rows"), "{stdout}");
    // `--details` at the standard threshold: the spike's window is a hit (its reward in (0, 1]),
    // and the false-positive rows listed are the standard line's count, all outside the window.
    let spiky = stdout.lines().find(|l| l.starts_with("synthetic/spiky.csv: ")).unwrap_or_else(|| panic!("no details line: {stdout}"));
    let reward: f64 = spiky.split("windows [hit ").nth(1).and_then(|r| r.split(']').next()).and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("{spiky}"));
    assert!(reward > 0.0 && reward <= 1.0, "{spiky}");
    let fp_rows: Vec<usize> = spiky.rsplit_once('[').unwrap().1.trim_end_matches(']').split_whitespace().map(|r| r.parse().unwrap()).collect();
    assert!(fp_rows.iter().all(|r| !(680..=720).contains(r)), "{spiky}");
    let standard = stdout.lines().find(|l| l.starts_with("standard")).unwrap();
    assert!(standard.ends_with(&format!("fp rows {}", fp_rows.len())), "{standard} vs {spiky}");
    assert!(stdout.lines().any(|l| l == "synthetic/calm.csv: windows []; fp rows 0 []"), "{stdout}");
    for profile in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        let line = stdout.lines().find(|l| l.starts_with(profile)).unwrap_or_else(|| panic!("no {profile} line"));
        let score: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        // The spike is the highest score of the corpus: the best threshold detects its window
        // (false positives right after a window cost little; null 0, perfect 100).
        assert!(score > 50.0 && score <= 100.0, "{line}");
        assert!(line.contains("1/1"), "{line}");
    }
    for (name, stamps) in [("spiky", &rows[0]), ("calm", &rows[1])] {
        let text = std::fs::read_to_string(out.join(format!("synthetic/vigil_{name}.csv"))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "timestamp,anomaly_score");
        assert_eq!(lines.len(), stamps.len() + 1, "one result row per data row");
        assert!(lines[1..].iter().zip(stamps.iter()).all(|(l, s)| l.starts_with(&format!("{s},"))));
    }
}

#[test]
fn an_out_of_order_row_is_counted_late_and_still_gets_an_output_row() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path());
    let input = dir.path().join("ooo.csv");
    // Rows every 5 min; row 5 goes back 20 min (before windows already emitted).
    let mut text = String::from("timestamp,value\n");
    for i in 0..10usize {
        let t = if i == 5 { timestamp(1) } else { timestamp(i) };
        text.push_str(&format!("{},{}\n", iso(t), i));
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.csv");
    let o = vigil(&["replay", "-c", config.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("replayed 10 rows (10 readings, 1 late)"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 11);
}
