//! Config hot reload (SIGHUP, `POST /api/config/reload`).
//!
//! # Rules
//! * **All or nothing.** The file is read and validated exactly as at start
//!   ([`Config::load`]); a file that does not load is rejected with `file:line: key` and the
//!   running config stays, untouched.
//! * **What applies at once:** the keys in [`RELOADABLE`] — score bands and hysteresis
//!   (`[alerts]` score, thresholds, raise/clear/cooldown, novelty horizon; the inference thread re-derives every
//!   deployed model's bands between two batches, the alert stage takes the policy before its
//!   next batch), and every sink: `[uplink.directory]`, `[uplink.kafka]`, `[uplink.s3]`,
//!   `[uplink.heartbeat]`, `[[alerts.webhook]]` and `[[alerts.route]]`. The sinks are stopped and
//!   started again with the new settings (an in-flight delivery is redelivered: delivery is
//!   at-least-once); if the new sinks cannot start, the old ones are started again and the
//!   reload is rejected.
//! * **What needs a restart:** every other key (sources, pipeline, the model, the API, the
//!   outbox quota, MQTT alert topics, …). A reload that changes one is still applied for the
//!   reloadable keys; the others are named in the answer and logged, and keep their running
//!   value (so they are named again by the next reload until the agent restarts). Secrets are
//!   compared redacted: a changed secret outside the sinks is not noticed.

use serde::Serialize;

use super::Config;

/// Dotted key prefixes applied by a reload without a restart.
pub const RELOADABLE: [&str; 13] = [
    "alerts.score",
    "alerts.review_threshold",
    "alerts.alert_threshold",
    "alerts.raise_after",
    "alerts.clear_after",
    "alerts.cooldown_s",
    "alerts.novelty_horizon",
    "alerts.webhook",
    "alerts.route",
    "uplink.directory",
    "uplink.kafka",
    "uplink.s3",
    "uplink.heartbeat",
];

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReloadOutcome {
    /// Keys whose new value is in effect.
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their running value until a restart.
    pub restart_needed: Vec<String>,
}

fn reloadable(key: &str) -> bool {
    RELOADABLE.iter().any(|p| key == *p || key.starts_with(&format!("{p}.")) || key.starts_with(&format!("{p}[")))
}

/// Dotted keys whose values differ between `a` and `b` (arrays compared whole).
fn changed_keys(a: &toml::Value, b: &toml::Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let keys: std::collections::BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (ta.get(k), tb.get(k)) {
                    (Some(x), Some(y)) => changed_keys(x, y, &p, out),
                    _ => out.push(p),
                }
            }
        }
        (x, y) if x != y => out.push(path.to_string()),
        _ => {}
    }
}

/// Compares the running config with a newly loaded one: the config to run from now on (the
/// running one with the reloadable keys of `new`) and what changed.
pub fn plan(running: &Config, new: Config) -> (Config, ReloadOutcome) {
    let value = |c: &Config| toml::Value::try_from(c).unwrap_or(toml::Value::Table(Default::default()));
    let mut changed = Vec::new();
    changed_keys(&value(running), &value(&new), "", &mut changed);
    let (applied, restart_needed): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| reloadable(k));
    let mut next = running.clone();
    let a = &mut next.alerts;
    a.score = new.alerts.score;
    a.review_threshold = new.alerts.review_threshold;
    a.alert_threshold = new.alerts.alert_threshold;
    a.raise_after = new.alerts.raise_after;
    a.clear_after = new.alerts.clear_after;
    a.cooldown_s = new.alerts.cooldown_s;
    // The ranges take a new block size at their next block (crate::alerts::Range).
    a.novelty_horizon = new.alerts.novelty_horizon;
    a.webhook = new.alerts.webhook;
    a.route = new.alerts.route;
    let u = &mut next.uplink;
    u.directory = new.uplink.directory;
    u.kafka = new.uplink.kafka;
    u.s3 = new.uplink.s3;
    u.heartbeat = new.uplink.heartbeat;
    (next, ReloadOutcome { applied, restart_needed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[agent]\nid = \"a\"\ndata_dir = \"d\"\n[ingest.simulator]\n[inference]\nmodel_dir = \"m\"\n[alerts]\nalert_threshold = 0.7\n{extra}"
        );
        Config::from_toml(&text, std::path::Path::new("/x/vigil.toml"), |_| None).unwrap()
    }

    #[test]
    fn reloadable_keys_apply_the_rest_waits_for_a_restart() {
        let running = config("[pipeline]\nworkers = 2\n");
        let new = config("raise_after = 5\nnovelty_horizon = 100\n[pipeline]\nworkers = 3\n[uplink.directory]\npath = \"out\"\n");
        let (next, outcome) = plan(&running, new);
        assert_eq!(outcome.applied, vec!["alerts.novelty_horizon", "alerts.raise_after", "uplink.directory"]);
        assert_eq!(next.alerts.novelty_horizon, 100);
        assert_eq!(outcome.restart_needed, vec!["pipeline.workers"]);
        assert_eq!(next.alerts.raise_after, 5);
        assert_eq!(next.uplink.directory.as_ref().map(|d| d.path.clone()), Some("/x/out".into()));
        // Not applied: named again by the next reload.
        assert_eq!(next.pipeline.workers, 2);
        let (_, again) = plan(&next, config("raise_after = 5\nnovelty_horizon = 100\n[pipeline]\nworkers = 3\n[uplink.directory]\npath = \"out\"\n"));
        assert_eq!(again, ReloadOutcome { applied: vec![], restart_needed: vec!["pipeline.workers".into()] });
    }
}
