//! The `vigil` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use vigil::config::{Config, LogFormat};

/// Vigil: edge anomaly detection for plant sensors.
#[derive(Parser)]
#[command(name = "vigil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGINT/SIGTERM (or until every finite source has finished).
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print the effective pipeline.
    CheckConfig {
        /// The configuration file.
        config: PathBuf,
    },
    /// Load a model folder, run its golden vectors through the linked TensorFlow Lite backend and
    /// print one JSON object: backend, TF Lite version, the golden report and every golden window's
    /// score. Exit 1 when the outputs are off by more than the golden tolerance. Needs no config:
    /// it is how a fresh install or an ARM build proves its inference (`cross/check-golden.sh`).
    ModelCheck {
        /// The model folder (manifest.json, model file, golden.json).
        model_dir: PathBuf,
    },
    /// Work with uplinked records.
    Uplink {
        #[command(subcommand)]
        action: UplinkAction,
    },
    /// Benchmark: publish readings through Mosquitto to a child agent; print throughput vs. a
    /// no-op subscriber (the ceiling), publish→alert latency and the agent's peak RSS.
    Bench {
        /// Readings in each throughput phase (default: sensors × the rounds needed to get
        /// every sensor past the model's warm-up and into scored windows).
        #[arg(long)]
        readings: Option<u64>,
        /// Sensors in the throughput phases.
        #[arg(long, default_value_t = 10_000)]
        sensors: usize,
        /// Use this broker (HOST:PORT) instead of starting Mosquitto.
        #[arg(long)]
        broker: Option<String>,
        /// The agent configuration template.
        #[arg(long, short, default_value = "config/bench.toml")]
        config: PathBuf,
        /// Keep the temporary directory (broker config, agent config, data dir, metrics).
        #[arg(long)]
        keep: bool,
        /// Readings/s in the paced steady-state phase (default: --sensors, i.e. every sensor at
        /// 1 Hz; at most half the agent's measured rate).
        #[arg(long)]
        latency_rate: Option<f64>,
        /// Mosquitto `max_inflight_messages` (unacked QoS 1 messages per client).
        #[arg(long, default_value_t = 1000)]
        max_inflight: u32,
        /// Publisher connections.
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Leave Mosquitto's `set_tcp_nodelay` at its default (false): Nagle on the broker's
        /// sockets.
        #[arg(long)]
        broker_nagle: bool,
    },
    /// List the Modbus write-back audit log (every write, refusal and failure) of a stopped agent.
    Audit {
        /// The configuration file (locates the state).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Push a recorded CSV stream through the live pipeline's code (windows, features,
    /// micro-batched inference, alert logic) in event time, as fast as possible; write one row
    /// per input row: `timestamp,<values…>,score,band,alert`. Nothing is persisted or published.
    Replay {
        /// The configuration file (model, `inference.max_batch`, alert thresholds and hysteresis).
        #[arg(long, short)]
        config: PathBuf,
        /// The CSV file: a header row, a timestamp column (`YYYY-MM-DD HH:MM:SS[.f]` UTC or epoch
        /// ms) and value columns.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the scores (CSV).
        #[arg(long)]
        out: PathBuf,
        /// The timestamp column (default: the first column).
        #[arg(long)]
        timestamp_column: Option<String>,
        /// `COLUMN=ENTITY`: replay COLUMN as entity ENTITY (repeatable; replaces the config's
        /// `replay.entities`). Default: `replay.entities`, or if that is empty every
        /// non-timestamp column, as an entity named like the column.
        #[arg(long = "entity", value_name = "COLUMN=ENTITY")]
        entities: Vec<String>,
        /// The field separator.
        #[arg(long, default_value = ",")]
        separator: char,
        /// Window geometry: `auto` (hop = the file's median timestamp step, size = model width ×
        /// hop) or `config` (`pipeline.window`).
        #[arg(long, default_value = "auto")]
        window: WindowArg,
    },
    /// Measure detection quality with a public benchmark's own rules (through `replay`).
    Eval {
        #[command(subcommand)]
        benchmark: EvalBenchmark,
    },
    /// Inspect or replay the dead-letter queue of a stopped agent.
    Dlq {
        /// The configuration file (locates the state and the decoders).
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WindowArg {
    Auto,
    Config,
}

impl From<WindowArg> for vigil::replay::WindowChoice {
    fn from(w: WindowArg) -> Self {
        match w {
            WindowArg::Auto => vigil::replay::WindowChoice::Auto,
            WindowArg::Config => vigil::replay::WindowChoice::Config,
        }
    }
}

#[derive(Subcommand)]
enum EvalBenchmark {
    /// Numenta Anomaly Benchmark: replay every labelled file, write NAB result files, print the
    /// normalised NAB score of the standard, reward_low_FP_rate and reward_low_FN_rate profiles.
    Nab {
        /// The NAB folder (holding `data/` and `labels/combined_windows.json`).
        #[arg(long)]
        data: PathBuf,
        /// The configuration file (model and alert settings).
        #[arg(long, short, default_value = "config/vigil.toml")]
        config: PathBuf,
        /// Write NAB result files (`<out>/<category>/vigil_<name>.csv`) here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Window geometry (see `replay --window`).
        #[arg(long, default_value = "auto")]
        window: WindowArg,
        /// Replay and score only the files at even or odd positions of the sorted label list
        /// (a held-out half for parameters chosen on the other one).
        #[arg(long)]
        half: Option<vigil::eval::Half>,
        /// Also print, per file at the standard profile's threshold, which windows are found
        /// (and how early) or missed (and their highest score), and the false-positive rows.
        #[arg(long)]
        details: bool,
    },
    /// Skoltech Anomaly Benchmark: replay every labelled `<group>/*.csv` as a new asset (the
    /// first 400 rows are its warm-up, the rest is scored), print F1, false-alarm and
    /// missed-alarm rates per group and overall (point-wise, SKAB's rules).
    Skab {
        /// The SKAB data folder (holding `<group>/*.csv`, e.g. `valve1/0.csv`).
        #[arg(long)]
        data: PathBuf,
        /// The configuration file (multivariate model, `[[pipeline.assets]]` naming the value
        /// columns, alert settings).
        #[arg(long, short, default_value = "config/skab.toml")]
        config: PathBuf,
        /// Write per-row results (`<out>/<group>/<name>.csv`: datetime, score, band, alert,
        /// label) here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Window geometry (see `replay --window`).
        #[arg(long, default_value = "auto")]
        window: WindowArg,
    },
}

#[derive(Subcommand)]
enum UplinkAction {
    /// Decode record files — the directory sink's `.vrec` files or the S3 sink's `.jsonl.zst`
    /// objects (told apart by their first bytes) — and print one JSON record per line. `-`
    /// reads standard input.
    Inspect {
        /// Files to decode, in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Outbox depth and drops per record kind, and every sink's cursors, delivered counts and
    /// oldest undelivered record, from the state of a stopped agent.
    Status {
        /// The configuration file (locates the state).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Bytes uplinked per hour under each `[uplink.policy]` (readings always / around alerts /
    /// never, scores on or off), per record kind: runs the configuration's plant simulator in a
    /// child agent, sped up, once per policy.
    Volume {
        /// A configuration with `[ingest.simulator]`.
        #[arg(long, short, default_value = "config/demo.toml")]
        config: PathBuf,
        /// Simulated seconds per policy (results are scaled to one hour).
        #[arg(long, default_value_t = 3600)]
        simulated_s: u64,
        /// Simulator speed-up (simulated seconds per wall-clock second).
        #[arg(long, default_value_t = 200.0)]
        speedup: f64,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// One line per dead letter: id, time, source, reason, topic, size.
    List {
        /// First id to show.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Everything about one dead letter, with the payload as text and hex.
    Show { id: u64 },
    /// Decode dead letters again with the current config; those that now decode are committed
    /// as readings (processed at the next start) and removed from the DLQ.
    Replay {
        /// Only this id (default: all).
        #[arg(long)]
        id: Option<u64>,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if let Command::Uplink { action: UplinkAction::Inspect { files } } = &cli.command {
        return match vigil::cli::uplink_inspect(files) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Uplink { action: UplinkAction::Volume { config, simulated_s, speedup } } = &cli.command {
        return match vigil::uplink_volume::measure(config, *simulated_s, *speedup) {
            Ok(volumes) => {
                print!("{}", vigil::uplink_volume::render(&volumes));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::ModelCheck { model_dir } = &cli.command {
        return match vigil::cli::model_check(model_dir) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Bench { readings, sensors, broker, config, keep, latency_rate, max_inflight, connections, broker_nagle } = &cli.command {
        tracing_subscriber::fmt().with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))).with_writer(std::io::stderr).init();
        let opts = vigil::bench::BenchOptions {
            readings: *readings,
            sensors: *sensors,
            broker: broker.clone(),
            config: config.clone(),
            keep: *keep,
            latency_rate: *latency_rate,
            max_inflight: *max_inflight,
            connections: *connections,
            broker_nodelay: !*broker_nagle,
        };
        return match vigil::bench::run(opts) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(3),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config_path = match &cli.command {
        Command::Run { config }
        | Command::CheckConfig { config }
        | Command::Dlq { config, .. }
        | Command::Audit { config }
        | Command::Replay { config, .. }
        | Command::Eval { benchmark: EvalBenchmark::Nab { config, .. } }
        | Command::Eval { benchmark: EvalBenchmark::Skab { config, .. } }
        | Command::Uplink { action: UplinkAction::Status { config } } => config.clone(),
        Command::Uplink { action: UplinkAction::Inspect { .. } | UplinkAction::Volume { .. } } | Command::Bench { .. } | Command::ModelCheck { .. } => {
            unreachable!("handled above")
        }
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.agent.log));
    // Colours only on a terminal: under systemd stderr goes to the journal, which would store
    // the escape codes verbatim.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logger = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match config.agent.log_format {
        LogFormat::Text => logger.init(),
        // One object per line: timestamp, level, target, the event's fields (flattened) and the
        // current span's fields (entity, seq where a span sets them).
        LogFormat::Json => logger.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    let result = match cli.command {
        Command::Run { .. } => vigil::agent::run(config).map(|_| ()).map_err(|e| e.to_string()),
        Command::Uplink { action: UplinkAction::Status { .. } } => vigil::cli::uplink_status(&config).map_err(|e| e.to_string()),
        Command::Uplink { .. } | Command::Bench { .. } | Command::ModelCheck { .. } => Ok(()),
        Command::CheckConfig { .. } => vigil::cli::check_config(&config).map_err(|e| e.to_string()),
        Command::Audit { .. } => vigil::cli::audit_list(&config).map_err(|e| e.to_string()),
        Command::Replay { input, out, timestamp_column, entities, separator, window, .. } => {
            vigil::cli::replay(&config, &input, &out, timestamp_column, &entities, separator, window.into())
        }
        Command::Eval { benchmark: EvalBenchmark::Nab { data, out, window, half, details, .. } } => {
            vigil::cli::eval_nab(&config, &data, out.as_deref(), window.into(), half, details)
        }
        Command::Eval { benchmark: EvalBenchmark::Skab { data, out, window, .. } } => {
            vigil::cli::eval_skab(&config, &data, out.as_deref(), window.into())
        }
        Command::Dlq { action, .. } => match action {
            DlqAction::List { from, limit } => vigil::cli::dlq_list(&config, from, limit),
            DlqAction::Show { id } => vigil::cli::dlq_show(&config, id),
            DlqAction::Replay { id } => vigil::cli::dlq_replay(&config, id),
        }
        .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core) and keeps
/// freed memory in each; with a dozen pipeline threads that multiplies the resident size on a
/// small gateway. Two arenas are plenty for the agent's few allocating threads.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called first thing in main, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
