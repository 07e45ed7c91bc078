//! `vigil check-config`: an unknown key is reported as `file:line: key ...` with a non-zero exit;
//! a valid config prints the effective pipeline and exits 0.

mod support;

use support::*;

#[test]
fn unknown_key_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("typo.toml");
    let mut text = base_config("typo", &dir.path().join("data"), &dir.path().join("outbox"));
    text = text.replacen("workers = 2\n", "workers = 2\nworkerz = 3\n", 1);
    std::fs::write(&config, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("workerz")).unwrap() + 1;

    let out = vigil(&["check-config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("exit {:?}, stderr: {stderr}", out.status.code());
    assert!(!out.status.success(), "check-config accepted an unknown key");
    let expected = format!("{}:{line}: key `pipeline.workerz`", config.display());
    assert!(stderr.contains(&expected), "expected `{expected}` in:\n{stderr}");
}

#[test]
fn valid_config_prints_the_effective_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ok.toml");
    let text = format!(
        "{}\n{}\n{}\n[[ingest.serial]]\nport = \"/dev/ttyUSB7\"\nbaud = 57600\nentity = \"line1.n{{node}}.c{{channel}}\"\n\n[[pipeline.assets]]\nid = \"press1\"\nchannels = [\"press1.force\", \"press1.temp\"]\n\n[pipeline.warmup_pca]\nwindows = 2\n",
        base_config("ok", &dir.path().join("data"), &dir.path().join("outbox")).replacen("cooldown_s = 60\n", "cooldown_s = 60\nscore = \"novelty\"\nnovelty_horizon = 600\n", 1),
        mqtt_plain(18830),
        FLOW_SUBSCRIPTIONS
    );
    std::fs::write(&config, &text).unwrap();
    let out = vigil(&["check-config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check-config failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");
    let (name, version, sha) = model_identity();
    for needle in [
        "config OK — agent `ok`".to_string(),
        "mqtt broker 127.0.0.1:18830 (plain TCP), clean_session=false".into(),
        "subscribe plant/+/+/value".into(),
        "subscribe cbor/+".into(),
        "subscribe batch/+".into(),
        "subscribe num/+".into(),
        "entity={line}.{sensor}".into(),
        "serial /dev/ttyUSB7 at 57600 baud (8N1): firmware-bridge frames <= 256 B, entity=line1.n{node}.c{channel}".into(),
        format!("inference: {name} {version} (sha256 {sha})"),
        format!("sliding windows (end - size, end]: size {SIZE_MS} ms, hop {HOP_MS} ms, offset 0 ms"),
        "alerts: review >= 0.3, alert >= 0.4, raise after 1".into(),
        format!("score novelty: against the values of the last 600 windows ({} s at the configured hop)", 600 * HOP_MS / 1000),
        "publish to `vigil/{agent}/alerts`".into(),
        format!("directory sink: {}", dir.path().join("outbox").display()),
        // The shipped test model is univariate: assets and the table would do nothing, and say so.
        "1 asset(s) configured but the model is univariate: assets are not joined".into(),
        "[pipeline.warmup_pca] is set but the model is univariate: it applies to asset windows only and is ignored".into(),
    ] {
        assert!(stdout.contains(&needle), "missing `{needle}` in:\n{stdout}");
    }
    for format in ["Json", "Cbor", "JsonArray", "Number"] {
        assert!(stdout.contains(&format!("format={format}")), "missing format={format} in:\n{stdout}");
    }
}
