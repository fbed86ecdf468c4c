//! The `supportfunnel` command: parses flags, calls the library, prints the
//! error chain and maps failure to a non-zero exit code.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use supportfunnel::config::Config;
use supportfunnel::context::{build_context, parse_bytes, sample_location, EngineOptions};
use supportfunnel::gen::{generate, GenOptions};
use supportfunnel::job::run_job;
use supportfunnel::output::{self, Format};
use supportfunnel::period::parse_tz;
use supportfunnel::progress::{Progress, ProgressRef};
use supportfunnel::render;
use supportfunnel::report::{rows_of, run_report, ReportOptions, ReportPath};
use supportfunnel::sql;

/// See Cargo.toml: large aggregations are several times faster with mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's option setter (the C library linked for the allocator).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_allow_thp` in the option enum of the mimalloc linked by
/// libmimalloc-sys 0.1.49 (v3; Cargo.lock pins it).
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

/// `mi_option_purge_delay` in the same enum.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Under `--memory-limit`, memory freed is given back to the system at once
/// instead of after mimalloc's purge delay: a report frees and allocates
/// batches continuously, and the retained pages made the process use twice
/// what the operators held (docs/PERFORMANCE.md), at a small cost in time.
fn purge_freed_memory_at_once() {
    // SAFETY: as in `tune_allocator`.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// No transparent huge pages for mimalloc's memory. With them (the kernel's
/// `madvise` mode, which mimalloc asks for) every fresh 64 KiB mimalloc page
/// made the kernel zero a whole 2 MiB huge page, and a scan allocates and
/// frees batch buffers continuously: a third of the report's CPU went to
/// zeroing pages (docs/PERFORMANCE.md). Set before anything large is mapped.
fn tune_allocator() {
    // SAFETY: sets a plain integer option that mimalloc reads on each mapping.
    unsafe { mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    // The arena mimalloc reserved at start-up was already advised for huge
    // pages: turn THP off for the whole process (what mimalloc itself does
    // when the option is set before it starts).
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Support funnel analytics over Parquet event history, on Apache DataFusion.
///
/// Tables: `events` and `messages` (the data contract), plus the views
/// `validated_events`, `rejected_events`, `clean_events`, `session_actions`,
/// `conversations`, `sessions`, `orphan_lifecycle_events`, and the window
/// function `session_start(ts [, max_span [, gap]])`.
#[derive(Parser, Debug)]
#[command(name = "supportfunnel", version, about, long_about)]
struct Cli {
    /// Config file (TOML): tables, storage, engine, defaults, [datafusion]
    /// options and the job's reports; flags given on the command line win
    #[arg(long, global = true, value_name = "FILE", env = "SUPPORTFUNNEL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run SQL over the tables and views (a query, a file, or an interactive prompt).
    ///
    /// Examples:
    ///   supportfunnel sql "SELECT status, count(*) FROM sessions GROUP BY 1"
    ///   supportfunnel sql --events s3://lake/events/ -f question.sql --format csv
    ///   supportfunnel sql            (interactive: end statements with `;`)
    #[command(verbatim_doc_comment)]
    Sql(SqlArgs),
    /// The support funnel report: every section, current vs previous period.
    ///
    /// Without --from/--to: the 28 full days in --tz before the day of the
    /// latest valid event dated up to now (that day counts as incomplete);
    /// events dated after now are counted and reported as a warning, and do
    /// not move the period. Filters of one kind are
    /// alternatives (OR); different kinds must all hold (AND).
    ///
    /// Example:
    ///   supportfunnel report --from 2026-02-01 --to 2026-03-01 --tz Europe/Paris --tag outage
    #[command(verbatim_doc_comment)]
    Report(ReportArgs),
    /// The scheduled job: every report of the config, for one run date, written
    /// as Parquet to <output.location>/report=<name>/report_date=<DATE>/.
    ///
    /// Each result is one object replaced atomically: a re-run of a date
    /// replaces its result, a failure leaves the previous one in place. Prints
    /// a one-line JSON summary on stdout; exits 0 only when everything was
    /// written.
    ///
    /// Example:
    ///   supportfunnel run --config job.toml --date 2026-03-01
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Generate a synthetic dataset (events + messages), Hive-partitioned by day.
    ///
    /// Deterministic for a seed; about 1M events for --users 20000 --days 90.
    Gen(GenArgs),
}

/// Where the data is and how much memory a query may use.
#[derive(Args, Debug, Clone)]
struct EngineArgs {
    /// Events dataset: a Parquet file, a directory, a Hive-partitioned
    /// directory, or s3://bucket/prefix [default: the bundled sample]
    #[arg(long, value_name = "PATH|URL")]
    events: Option<String>,
    /// Messages dataset, same forms as --events [default: the bundled sample]
    #[arg(long, value_name = "PATH|URL")]
    messages: Option<String>,
    /// Memory queries may use before spilling to --temp-dir, e.g. 2GiB
    /// [default: unlimited]
    #[arg(long, value_name = "SIZE")]
    memory_limit: Option<String>,
    /// Directory for spill files [default: the system temp directory]
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// Parallelism of query plans [default: the number of cores]
    #[arg(long, value_name = "N")]
    target_partitions: Option<usize>,
}

impl EngineArgs {
    /// Flags first, then the config file, then the defaults.
    fn options(&self, config: &Config) -> Result<EngineOptions> {
        let table = |flag: &Option<String>, name: &str| {
            flag.clone()
                .or_else(|| config.table(name).map(|t| t.uri.clone()))
                .unwrap_or_else(|| sample_location(name))
        };
        let memory_limit = match (&self.memory_limit, &config.engine.memory_limit) {
            (Some(s), _) => Some(parse_bytes(s).context("--memory-limit")?),
            (None, Some(s)) => Some(parse_bytes(s).context("[engine] memory_limit")?),
            (None, None) => None,
        };
        if memory_limit.is_some() {
            purge_freed_memory_at_once();
        }
        Ok(EngineOptions {
            events: Some(table(&self.events, "events")),
            messages: Some(table(&self.messages, "messages")),
            memory_limit,
            temp_dir: self
                .temp_dir
                .clone()
                .or_else(|| config.engine.temp_dir.clone()),
            target_partitions: self.target_partitions.or(config.engine.target_partitions),
            batch_size: config.engine.batch_size,
            s3: config.storage.s3.clone(),
            datafusion_options: config.datafusion_options(),
            partition_cols: config
                .tables
                .iter()
                .filter(|t| self.flag_for(&t.name).is_none())
                .filter_map(|t| Some((t.name.clone(), t.partition_cols.clone()?)))
                .collect(),
            extra_tables: config
                .tables
                .iter()
                .filter(|t| t.name != "events" && t.name != "messages")
                .map(|t| (t.name.clone(), t.uri.clone()))
                .collect(),
            cached_sessions: false,
        })
    }

    fn flag_for(&self, table: &str) -> Option<&String> {
        match table {
            "events" => self.events.as_ref(),
            "messages" => self.messages.as_ref(),
            _ => None,
        }
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Run date, YYYY-MM-DD: each report covers the days before it
    /// [default: today in the config's time zone]
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    date: Option<NaiveDate>,
}

#[derive(Args, Debug)]
struct SqlArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// SQL to run (several statements separated by `;` are run in order)
    #[arg(value_name = "QUERY", conflicts_with = "file")]
    query: Option<String>,
    /// Read the SQL from a file (`-` for stdin)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Output format: table, csv, json (newline-delimited) or parquet
    #[arg(long, default_value = "table", value_parser = parse_format)]
    format: Format,
    /// Write the result of the last statement to this file or s3:// object
    /// (atomically) instead of stdout
    #[arg(long, short = 'o', value_name = "PATH|URL")]
    output: Option<String>,
}

fn parse_strategy(s: &str) -> std::result::Result<ReportPath, String> {
    s.parse().map_err(|e: supportfunnel::Error| e.to_string())
}

fn parse_format(s: &str) -> std::result::Result<Format, String> {
    s.parse().map_err(|e: supportfunnel::Error| e.to_string())
}

#[derive(Args, Debug)]
struct ReportArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// First day of the period, YYYY-MM-DD (local to --tz)
    #[arg(long, value_name = "DATE", requires = "to", value_parser = parse_date)]
    from: Option<NaiveDate>,
    /// Day after the last day of the period, YYYY-MM-DD (exclusive)
    #[arg(long, value_name = "DATE", requires = "from", value_parser = parse_date)]
    to: Option<NaiveDate>,
    /// IANA time zone the days are read in [default: the config's, else UTC]
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Only proactive deliveries with this tag (repeatable)
    #[arg(long = "tag", value_name = "T")]
    tags: Vec<String>,
    /// Only proactive deliveries of this content type (repeatable)
    #[arg(long = "content-type", value_name = "C")]
    content_types: Vec<String>,
    /// Only proactive deliveries from this sender (repeatable)
    #[arg(long = "sender", value_name = "S")]
    senders: Vec<String>,
    /// Output format: table (for a person), json (one object per row), csv or parquet
    #[arg(long, default_value = "table", value_parser = parse_format)]
    format: Format,
    /// Write to this file or s3:// object (atomically) instead of stdout
    #[arg(long, short = 'o', value_name = "PATH|URL")]
    output: Option<String>,
    /// How sessions and conversations are computed: `native` (one scan, in
    /// memory: fastest), `sql` (DataFusion plans step by step, spilling to
    /// --temp-dir under --memory-limit), or `auto`: native when its estimate
    /// (about 100 bytes an event) fits in --memory-limit, or without a limit
    /// in half the machine's memory. Every strategy gives the same report.
    #[arg(long, default_value = "auto", value_parser = parse_strategy)]
    strategy: ReportPath,
    /// Print each step of the report with the rows it read and its time on
    /// stderr (a live progress line is shown anyway when stderr is a terminal)
    #[arg(long, short = 'v')]
    verbose: bool,
}

/// Shows report progress on stderr: a live line on a terminal, and with
/// `--verbose` one line per finished step.
#[derive(Debug)]
struct CliProgress {
    bar: indicatif::ProgressBar,
    verbose: bool,
}

impl CliProgress {
    fn new(verbose: bool) -> Option<Arc<Self>> {
        let tty = std::io::stderr().is_terminal();
        if !tty && !verbose {
            return None;
        }
        let bar = if tty {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Some(Arc::new(Self { bar, verbose }))
    }
}

impl Progress for CliProgress {
    fn step_started(&self, index: usize, total: usize, name: &str) {
        self.bar
            .set_message(format!("step {index}/{total}: {name}"));
        self.bar.set_prefix(format!("step {index}/{total}: {name}"));
    }

    fn rows_read(&self, rows: usize) {
        self.bar
            .set_message(format!("{}: {} rows read", self.bar.prefix(), rows));
    }

    fn step_finished(&self, name: &str, rows: usize, elapsed: std::time::Duration) {
        if self.verbose {
            self.bar
                .suspend(|| eprintln!("{name}: {:.2} s, {rows} rows read", elapsed.as_secs_f64()));
        }
    }
}

impl Drop for CliProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[derive(Args, Debug)]
struct GenArgs {
    /// Output directory; gets `events/` and `messages/` (must be empty or new)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of users
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Number of days
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Random seed (same seed and sizes: same data)
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First day, YYYY-MM-DD
    #[arg(long, default_value = "2026-01-01", value_parser = parse_date)]
    start: NaiveDate,
    /// Replace the output directory if it is not empty
    #[arg(long)]
    overwrite: bool,
}

fn parse_date(s: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("`{s}` is not a YYYY-MM-DD date: {e}"))
}

async fn run(cli: Cli) -> Result<()> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    match cli.command {
        Command::Run(a) => {
            if cli.config.is_none() {
                anyhow::bail!("run needs --config FILE (the reports and the output location)");
            }
            let engine = build_context(&a.engine.options(&config)?).await?;
            let tz = match &config.defaults.tz {
                Some(z) => parse_tz(z)?,
                None => chrono_tz::Tz::UTC,
            };
            let date = a
                .date
                .unwrap_or_else(|| chrono::Utc::now().with_timezone(&tz).date_naive());
            let summary = run_job(&engine, &config, date, None).await?;
            println!("{}", serde_json::to_string(&summary)?);
            for f in &summary.failed {
                eprintln!("error: report `{}`: {}", f.report, f.error);
            }
            if !summary.ok {
                anyhow::bail!(
                    "{} of {} reports failed; see above",
                    summary.failed.len(),
                    config.reports.len()
                );
            }
            Ok(())
        }
        Command::Gen(a) => {
            let stats = generate(&GenOptions {
                out: a.out.clone(),
                users: a.users,
                days: a.days,
                seed: a.seed,
                start: a.start,
                overwrite: a.overwrite,
                progress: std::io::stderr().is_terminal(),
            })
            .with_context(|| format!("generating into {}", a.out.display()))?;
            eprintln!(
                "wrote {} events and {} messages in {} files to {} in {:.2}s ({:.0} events/s)",
                stats.events,
                stats.messages,
                stats.files,
                a.out.display(),
                stats.seconds,
                stats.events as f64 / stats.seconds.max(1e-9)
            );
            Ok(())
        }
        Command::Report(a) => {
            let tz = parse_tz(
                a.tz.as_deref()
                    .or(config.defaults.tz.as_deref())
                    .unwrap_or("UTC"),
            )?;
            let or_config = |flags: Vec<String>, from_config: &Vec<String>| {
                if flags.is_empty() {
                    from_config.clone()
                } else {
                    flags
                }
            };
            if a.format == Format::Parquet && a.output.is_none() {
                anyhow::bail!("--format parquet needs --output FILE");
            }
            let engine = build_context(&a.engine.options(&config)?).await?;
            let progress = CliProgress::new(a.verbose);
            let report = run_report(
                &engine,
                &ReportOptions {
                    from: a.from,
                    to: a.to,
                    tz: Some(tz),
                    tags: or_config(a.tags, &config.defaults.tags),
                    content_types: or_config(a.content_types, &config.defaults.content_types),
                    senders: or_config(a.senders, &config.defaults.senders),
                    progress: progress.clone().map(|p| p as ProgressRef),
                    keep_sessions: false,
                    path: a.strategy,
                    now: None,
                },
            )
            .await?;
            drop(progress);
            if let Some(anchor) = &report.anchor {
                let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC");
                if anchor.future_events > 0 {
                    let n = anchor.future_events;
                    eprintln!(
                        "warning: {n} valid {} dated after now ({}); the default period \
                         ends with the day of the latest event before now ({}); pass --from and \
                         --to to report on later dates",
                        if n == 1 { "event is" } else { "events are" },
                        at(anchor.now),
                        at(anchor.latest)
                    );
                } else if a.verbose {
                    eprintln!(
                        "default period: the {} full days before the latest event, {}",
                        report.periods.days(),
                        at(anchor.latest)
                    );
                }
            }
            if a.verbose {
                if let Some(kib) = peak_memory_kib() {
                    eprintln!("peak memory: {} MiB", kib / 1024);
                }
            }
            if a.format == Format::Table {
                let text = render::render(&rows_of(&report.batch), &report.periods);
                match &a.output {
                    None => print!("{text}"),
                    Some(p) => {
                        output::put_atomically(&engine.ctx, p, text.into_bytes(), None).await?
                    }
                }
            } else {
                output::write_result_to(
                    &engine.ctx,
                    a.format,
                    &report.batch.schema(),
                    std::slice::from_ref(&report.batch),
                    a.output.as_deref(),
                )
                .await?;
            }
            Ok(())
        }
        Command::Sql(a) => {
            let mut opts = a.engine.options(&config)?;
            opts.cached_sessions = true;
            let text = match (&a.query, &a.file) {
                (Some(q), _) => Some(q.clone()),
                (None, Some(f)) if f.as_os_str() == "-" => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading SQL from stdin")?;
                    Some(s)
                }
                (None, Some(f)) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                ),
                (None, None) => None,
            };
            if text.is_none() && a.output.is_some() {
                anyhow::bail!("--output needs a QUERY or -f FILE (the interactive prompt prints to the terminal)");
            }
            if a.format == Format::Parquet && a.output.is_none() {
                anyhow::bail!("--format parquet needs --output FILE");
            }
            let engine = build_context(&opts).await?;
            match text {
                None => sql::repl(&engine.ctx).await?,
                Some(text) => {
                    let results = sql::run_script(&engine.ctx, &text).await?;
                    let out = a.output.as_deref();
                    match out {
                        // a file gets the last statement's result only
                        Some(_) => {
                            let last = results
                                .last()
                                .expect("run_script returns one result per statement");
                            output::write_result_to(
                                &engine.ctx,
                                a.format,
                                &last.schema,
                                &last.batches,
                                out,
                            )
                            .await?;
                        }
                        None => {
                            for r in &results {
                                output::write_result(a.format, &r.schema, &r.batches, None)?;
                            }
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// The error chain on one line: what failed, then why. DataFusion errors
/// repeat their sources in their own text and span lines, so causes already
/// said are dropped and line breaks folded.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    let line = parts.join(": ");
    if line.contains("--memory-limit") {
        return line;
    }
    if line.contains("Resources exhausted") || line.contains("Not enough memory") {
        // DataFusion's advice names its own settings; ours are the flag and
        // the config key that set them.
        let advice = line
            .find(" Consider increasing")
            .and_then(|i| line[i..].find("caused by").map(|j| i..i + j));
        let mut line = line.clone();
        if let Some(r) = advice {
            line.replace_range(r, " ");
        }
        return format!(
            "{line}; the query needs more memory than --memory-limit ([engine] memory_limit) \
             allows: raise it"
        );
    }
    line
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The process's peak resident memory so far (`VmHWM`, Linux), in KiB.
/// Not getrusage: its maximum includes the parent's memory before `exec`.
fn peak_memory_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits for SIGINT and SIGTERM on a thread of its own, outside the async
/// runtime: the runtime's signal driver only runs when a worker is idle, and
/// a command keeping every worker busy (or swapping) would never hear one.
/// The signals are blocked in every thread (the mask is inherited, so this
/// runs before any other thread starts) and taken here with `sigwait`.
///
/// On the first signal the interrupt flag is set and the main thread told;
/// if the process is still alive `STOP_GRACE` + 2 s later, or on a second
/// signal, this thread removes the temporary files and exits itself.
#[cfg(unix)]
fn watch_signals() -> tokio::sync::oneshot::Receiver<(&'static str, u8)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use;
    // pthread_sigmask only changes this thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let named = |sig: i32| {
        if sig == libc::SIGINT {
            ("SIGINT", 130u8)
        } else {
            ("SIGTERM", 143u8)
        }
    };
    let wait = move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid signal set; `sig` a valid out-pointer.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        named(sig)
    };
    std::thread::spawn(move || {
        let (name, code) = wait();
        supportfunnel::scratch::interrupt();
        let _ = tx.send((name, code));
        // The main thread normally exits within STOP_GRACE; this is the
        // backstop, and a second signal means "now".
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(wait());
        });
        let _ = done_rx.recv_timeout(STOP_GRACE + std::time::Duration::from_secs(2));
        let left = supportfunnel::scratch::remove_all();
        eprintln!(
            "interrupted by {name}: stopped{}",
            if left == 0 {
                ", temporary files removed".to_string()
            } else {
                format!("; {left} temporary paths could not be removed")
            }
        );
        std::process::exit(i32::from(code));
    });
    rx
}

/// Without Unix signals: Ctrl-C through the runtime.
#[cfg(not(unix))]
fn watch_signals() -> tokio::sync::oneshot::Receiver<(&'static str, u8)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                supportfunnel::scratch::interrupt();
                let _ = tx.send(("Ctrl-C", 130));
            }
        }
    });
    rx
}

/// How long an interrupted command gets to stop by itself (futures dropped,
/// `gen` noticing the flag) before what is left of its temporary files is
/// removed under it.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // Before the runtime starts its threads (they inherit the signal mask).
    let signals = watch_signals();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // The command runs as a task so that this thread stays free to notice
    // a signal while the command's threads are busy.
    let mut work = runtime.spawn(run(cli));
    let outcome = runtime.block_on(async {
        tokio::select! {
            done = &mut work => Ok(done),
            Ok(signal) = signals => Err(signal),
        }
    });
    match outcome {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not a failure.
        Ok(Ok(Err(e))) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
        Ok(Err(join)) => {
            supportfunnel::scratch::remove_all();
            eprintln!("error: internal error: {join}");
            ExitCode::from(101)
        }
        Err((name, code)) => {
            supportfunnel::scratch::interrupt();
            work.abort();
            runtime.shutdown_timeout(STOP_GRACE);
            let left = supportfunnel::scratch::remove_all();
            if left == 0 {
                eprintln!("interrupted by {name}: stopped, temporary files removed");
            } else {
                eprintln!(
                    "interrupted by {name}: stopped; {left} temporary paths could not be removed"
                );
            }
            ExitCode::from(code)
        }
    }
}
