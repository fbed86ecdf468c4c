//! The command line: flags of every command, and how they become the
//! library's [`Flags`] (precedence itself is decided by
//! [`supportfunnel::settings::Settings::resolve`]).

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use supportfunnel::render::output::Format;
use supportfunnel::settings::Flags;

/// Support funnel analytics over Parquet event history, on Apache DataFusion.
///
/// Tables: `events` and `messages` (the data contract), plus the views
/// `validated_events`, `rejected_events`, `clean_events`, `session_actions`,
/// `conversations`, `sessions`, `orphan_lifecycle_events`, and the window
/// function `session_start(ts [, max_span [, gap]])`.
#[derive(Parser, Debug)]
#[command(name = "supportfunnel", version, about, long_about)]
pub struct Cli {
    /// Config file (TOML): tables, storage, engine, defaults, [datafusion]
    /// options and the job's reports; flags given on the command line win
    #[arg(long, global = true, value_name = "FILE", env = "SUPPORTFUNNEL_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    /// to <output.location>/report=<name>/report_date=<DATE>/ as Parquet, or
    /// into a Delta Lake table with [output] format = "delta"; with
    /// formats = ["html"] in a report's entry, also its HTML page.
    ///
    /// Each result is one object replaced atomically (a Delta table gets one
    /// commit per result): a re-run of a date replaces its result, a failure
    /// leaves the previous one in place. With [state] location, runs are
    /// incremental: only new files are read, with the same results as a
    /// full recompute (docs/INCREMENTAL.md). Prints a one-line JSON summary
    /// on stdout; exits 0 only when everything was written (and, with
    /// [state], the state saved).
    ///
    /// Example:
    ///   supportfunnel run --config job.toml --date 2026-03-01
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Generate a synthetic dataset (events + messages), Hive-partitioned by day.
    ///
    /// Deterministic for a seed; about 1M events for --users 20000 --days 90.
    Gen(GenArgs),
    /// Serve the tables over the PostgreSQL wire protocol (psql, Metabase, BI tools).
    ///
    /// Serves `events`, `messages`, the views (`sessions`, `conversations`,
    /// …), the functions and the report as a table function:
    ///   SELECT * FROM report('2026-02-01', '2026-03-01', 'UTC', 'tag=outage')
    /// Read-only: DDL, INSERT, COPY and SET of engine options are refused.
    /// Each connection has a session of its own; --memory-limit holds for
    /// the whole server. The password comes from $SUPPORTFUNNEL_PG_PASSWORD
    /// (or [serve] password in the config), never from a flag; without one,
    /// every client is trusted and only a loopback address is allowed.
    /// Prints `serving on HOST:PORT` on stderr once it accepts connections.
    ///
    /// Examples:
    ///   supportfunnel serve --events s3://lake/events/ --messages s3://lake/messages/
    ///   SUPPORTFUNNEL_PG_PASSWORD=... supportfunnel serve --listen 0.0.0.0:5433 \
    ///     --user metabase --tls-cert server.crt --tls-key server.key
    ///   psql "host=127.0.0.1 port=5433 user=supportfunnel dbname=datafusion"
    #[cfg(feature = "serve")]
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Run an Apache Ballista scheduler with supportfunnel's functions.
    ///
    /// Clients send queries to it with --cluster df://HOST:PORT; it plans them
    /// into stages and hands their tasks to the executors registered with it.
    /// Prints `scheduler listening on HOST:PORT` on stderr once it accepts
    /// connections. See docs/CLUSTER.md.
    ///
    /// Example:
    ///   supportfunnel scheduler --bind 0.0.0.0:50050 --external-host sched.internal
    #[cfg(feature = "cluster")]
    #[command(verbatim_doc_comment)]
    Scheduler(SchedulerArgs),
    /// Run an Apache Ballista executor with supportfunnel's functions.
    ///
    /// Registers with the scheduler, runs the tasks it is given, and keeps
    /// shuffle files in --work-dir. Every executor runs the same version of
    /// supportfunnel as the scheduler and the clients. See docs/CLUSTER.md.
    ///
    /// Example:
    ///   supportfunnel executor --scheduler sched.internal:50050 --concurrent-tasks 8 \
    ///     --memory-limit 24GiB --work-dir /var/lib/supportfunnel
    #[cfg(feature = "cluster")]
    #[command(verbatim_doc_comment)]
    Executor(ExecutorArgs),
}

#[cfg(feature = "cluster")]
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Address to listen on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
    pub bind: std::net::SocketAddr,
    /// Host name executors and clients reach this scheduler by [default:
    /// the bind address]
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// Seconds without a heartbeat after which an executor is taken as lost
    /// (its tasks run again on another; with none left, running queries fail
    /// after as long again)
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(2..))]
    pub executor_timeout: u64,
}

#[cfg(feature = "cluster")]
#[derive(Args, Debug)]
pub struct ExecutorArgs {
    /// The scheduler to register with, HOST:PORT or df://HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    pub scheduler: String,
    /// Address to listen on for Arrow Flight (results and shuffle data);
    /// the gRPC port is --grpc-port
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
    pub bind: std::net::SocketAddr,
    /// Port for the scheduler's calls [default: the --bind port + 1]
    #[arg(long, value_name = "PORT")]
    pub grpc_port: Option<u16>,
    /// Host name the scheduler and other executors reach this one by
    /// [default: the bind address]
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// Directory for shuffle files and spills [default: a private directory
    /// in the system temp directory, removed on exit]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Tasks run at once [default: the number of cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..1025))]
    pub concurrent_tasks: Option<u64>,
    /// Memory the running tasks may use together before spilling, e.g. 8GiB
    /// [default: 70% of the machine's memory]
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    /// Seconds between heartbeats to the scheduler (keep well under its
    /// --executor-timeout)
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_interval: u64,
}

#[cfg(feature = "serve")]
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Address and port to listen on (port 0: any free port) [default: the
    /// config's [serve] listen, else 127.0.0.1:5433]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// The user clients log in as [default: [serve] user, else supportfunnel]
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// PEM certificate chain: with it, every connection must use TLS
    /// (clients connect with sslmode=require or verify-full; plain
    /// connections are refused) [default: [serve] tls_cert]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [default: [serve] tls_key]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Clients logged in at once; more get "too many clients" (53300)
    /// [default: [serve] max_connections, else 64]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Time a query may run unless its client sets statement_timeout, e.g.
    /// 5m; 0 for none [default: [serve] statement_timeout, else none]
    #[arg(long, value_name = "DURATION")]
    pub statement_timeout: Option<String>,
    /// Time a new connection has to log in; silent or slow clients are
    /// dropped then, and never hold one of --max-connections [default:
    /// [serve] login_timeout, else 10s]
    #[arg(long, value_name = "DURATION")]
    pub login_timeout: Option<String>,
    /// Zone of report(…) calls that name none [default: the config's, else UTC]
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
}

#[cfg(feature = "serve")]
impl ServeArgs {
    /// The engine flags as the library takes them.
    pub fn flags(&self) -> Flags {
        Flags {
            tz: self.tz.clone(),
            ..self.engine.flags()
        }
    }

    /// The server's own flags.
    pub fn serve_flags(&self) -> supportfunnel::serve::ServeFlags {
        supportfunnel::serve::ServeFlags {
            listen: self.listen.clone(),
            user: self.user.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            max_connections: self.max_connections,
            statement_timeout: self.statement_timeout.clone(),
            login_timeout: self.login_timeout.clone(),
        }
    }
}

/// Where the data is, how much memory a query may use, and the cluster
/// it runs on.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    #[command(flatten)]
    pub tables: TableArgs,
    /// Run the queries on this Apache Ballista cluster (`supportfunnel
    /// scheduler` and `executor`) instead of in this process; tables must be
    /// where every executor can read them (s3://, or a path mounted on
    /// every node) [default: the config's [engine] cluster, else none]
    #[arg(long, value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
    /// On a cluster, where the report keeps its intermediate tables: an
    /// s3:// location, or an absolute path mounted on every node, that
    /// every executor can read and write; a private prefix under it is
    /// removed when the report ends [default: the config's [engine] scratch]
    #[arg(long, value_name = "URL|PATH")]
    pub scratch: Option<String>,
}

/// Where the data is and how much memory a query may use.
#[derive(Args, Debug, Clone)]
pub struct TableArgs {
    /// Events dataset: a Parquet file, a directory, a Hive-partitioned
    /// directory, or s3://bucket/prefix [default: the config's table, else
    /// the bundled sample in ./data/sample]
    #[arg(long, value_name = "PATH|URL")]
    pub events: Option<String>,
    /// Messages dataset, same forms as --events [default: as for --events]
    #[arg(long, value_name = "PATH|URL")]
    pub messages: Option<String>,
    /// Memory queries may use before spilling to --temp-dir, e.g. 2GiB
    /// [default: unlimited]
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    /// Directory for spill files [default: the system temp directory]
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Parallelism of query plans [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub target_partitions: Option<usize>,
}

impl TableArgs {
    /// The flags as the library takes them.
    pub fn flags(&self) -> Flags {
        Flags {
            events: self.events.clone(),
            messages: self.messages.clone(),
            memory_limit: self.memory_limit.clone(),
            temp_dir: self.temp_dir.clone(),
            target_partitions: self.target_partitions,
            ..Flags::default()
        }
    }
}

impl EngineArgs {
    /// The flags as the library takes them.
    pub fn flags(&self) -> Flags {
        Flags {
            cluster: self.cluster.clone(),
            scratch: self.scratch.clone(),
            ..self.tables.flags()
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Run date, YYYY-MM-DD: each report covers the days before it
    /// [default: today in the config's time zone]
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub date: Option<NaiveDate>,
    /// Recompute from every input file and rebuild the `[state]`, even when
    /// the state could serve an incremental run
    #[arg(long)]
    pub full: bool,
}

#[derive(Args, Debug)]
pub struct SqlArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// SQL to run (several statements separated by `;` are run in order)
    #[arg(value_name = "QUERY", conflicts_with = "file")]
    pub query: Option<String>,
    /// Read the SQL from a file (`-` for stdin)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Output format: table, csv, json (newline-delimited) or parquet
    #[arg(long, default_value = "table", value_parser = parse_format)]
    pub format: Format,
    /// Write the result of the last statement to this file or s3:// object
    /// (atomically) instead of stdout
    #[arg(long, short = 'o', value_name = "PATH|URL")]
    pub output: Option<String>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse().map_err(|e: supportfunnel::Error| e.to_string())
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// First day of the period, YYYY-MM-DD (local to --tz)
    #[arg(long, value_name = "DATE", requires = "to", value_parser = parse_date)]
    pub from: Option<NaiveDate>,
    /// Day after the last day of the period, YYYY-MM-DD (exclusive)
    #[arg(long, value_name = "DATE", requires = "from", value_parser = parse_date)]
    pub to: Option<NaiveDate>,
    /// IANA time zone the days are read in [default: the config's, else UTC]
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Only proactive deliveries with this tag (repeatable)
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Only proactive deliveries of this content type (repeatable)
    #[arg(long = "content-type", value_name = "C")]
    pub content_types: Vec<String>,
    /// Only proactive deliveries from this sender (repeatable)
    #[arg(long = "sender", value_name = "S")]
    pub senders: Vec<String>,
    /// Output format: table (for a person), json (one object per row), csv,
    /// parquet, or html (one self-contained page with charts, for a person or
    /// a mail attachment)
    #[arg(long, default_value = "table", value_parser = parse_format)]
    pub format: Format,
    /// Write to this file or s3:// object (atomically) instead of stdout
    #[arg(long, short = 'o', value_name = "PATH|URL")]
    pub output: Option<String>,
    /// Print each step of the report with the rows it read and its time on
    /// stderr (a live progress line is shown anyway when stderr is a terminal)
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Instead of the report, list the items behind one of its metrics
    /// (`people_stopped`, `csat`, `self_serve.article_views`, …), both
    /// periods: the people, sessions, conversations, deliveries, article
    /// views or rows it counts, with `in_numerator` and `value` to
    /// recompute it (docs/METRICS.md "Detail")
    #[arg(long, value_name = "METRIC")]
    pub detail: Option<String>,
    /// With --detail: only this segment's rows (`after_self_serve` or
    /// `from_start` for the human metrics, a reason for rows_rejected,
    /// `events` or `messages` for rows_read)
    #[arg(long, value_name = "S", requires = "detail")]
    pub segment: Option<String>,
    /// With --detail: only the rows of this period (current or previous)
    #[arg(long, value_name = "PERIOD", requires = "detail", value_parser = ["current", "previous"])]
    pub period: Option<String>,
}

impl ReportArgs {
    /// The flags as the library takes them.
    pub fn flags(&self) -> Flags {
        Flags {
            tz: self.tz.clone(),
            tags: self.tags.clone(),
            content_types: self.content_types.clone(),
            senders: self.senders.clone(),
            ..self.engine.flags()
        }
    }
}

#[derive(Args, Debug)]
pub struct GenArgs {
    /// Output directory; gets `events/` and `messages/` (must be empty or new)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of users
    #[arg(long, default_value_t = 20_000)]
    pub users: u64,
    /// Number of days
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Random seed (same seed and sizes: same data)
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First day, YYYY-MM-DD
    #[arg(long, default_value = "2026-01-01", value_parser = parse_date)]
    pub start: NaiveDate,
    /// Replace the output directory if it is not empty
    #[arg(long)]
    pub overwrite: bool,
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    supportfunnel::settings::period::parse_date(s).map_err(|e| e.to_string())
}
