//! One function per command: resolve the settings, build the engine, call
//! the library, print. Nothing here decides precedence or checks a value the
//! library checks.

use std::io::{IsTerminal, Read};
use std::sync::Arc;

use anyhow::{Context, Result};
use supportfunnel::build_context;
use supportfunnel::datagen::{generate, DayProgress, GenOptions};
use supportfunnel::engine::progress::ProgressRef;
use supportfunnel::engine::query;
use supportfunnel::job::{run_job_with, RunOptions};
use supportfunnel::render::output::{self, Format};
use supportfunnel::report::detail::{DetailRequest, PeriodChoice};
use supportfunnel::report::{rows_of, run_details, run_report, Anchor, ReportOptions};
use supportfunnel::settings::config::Config;
use supportfunnel::settings::location::Location;
use supportfunnel::settings::{Env, Flags, Settings};

use crate::cli::args::{Cli, Command, GenArgs, ReportArgs, RunArgs, SqlArgs};
use crate::cli::process::{peak_memory_kib, purge_freed_memory_for};
use crate::cli::progress::CliProgress;
use crate::cli::{prompt, table};

/// The runtime's threads for the command `cli` names: the cores, except
/// for `serve`, which gets eight per core (at least 16). A query's busy
/// steps do not always give their thread back between batches (DataFusion's
/// own channels do not count towards tokio's cooperative budget), so one
/// long query may hold up to target_partitions + 1 threads while it runs;
/// the spare threads keep the other clients, and the cancel, timeout and
/// hang-up of that query, served meanwhile (docs/SERVE.md).
pub fn worker_threads(cli: &Cli) -> Option<usize> {
    match &cli.command {
        #[cfg(feature = "serve")]
        Command::Serve(_) => {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Some((8 * cores).max(16))
        }
        _ => None,
    }
}

/// Runs the command `cli` names.
pub async fn dispatch(cli: Cli) -> Result<()> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    match cli.command {
        Command::Report(args) => report(&config, args).await,
        Command::Sql(args) => sql(&config, args).await,
        Command::Run(args) => run(cli.config.is_some(), &config, args).await,
        Command::Gen(args) => gen(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve(&config, args).await,
        #[cfg(feature = "cluster")]
        Command::Scheduler(args) => scheduler(args).await,
        #[cfg(feature = "cluster")]
        Command::Executor(args) => executor(args).await,
    }
}

/// `supportfunnel serve`: runs until interrupted.
#[cfg(feature = "serve")]
async fn serve(config: &Config, args: crate::cli::args::ServeArgs) -> Result<()> {
    use supportfunnel::serve::{ServeOptions, PASSWORD_ENV};
    init_node_logging();
    let opts = ServeOptions::resolve(
        &args.serve_flags(),
        &config.serve,
        std::env::var(PASSWORD_ENV).ok(),
    )?;
    let mut settings = settings(&args.flags(), config)?;
    settings.engine.no_url_tables = true;
    let engine = supportfunnel::open(&settings.engine, settings.tz).await?;
    warn_skipped(&engine);
    let server = supportfunnel::serve::start(&engine, opts.clone()).await?;
    let addr = server.local_addr();
    eprintln!(
        "serving on {addr} (user {}, {}, {}); connect with: psql \"host={} port={} user={} dbname=datafusion{}\"",
        opts.user,
        if opts.password.is_some() { "password (SCRAM-SHA-256)" } else { "no password: loopback only" },
        if opts.tls.is_some() { "TLS" } else { "no TLS" },
        addr.ip(),
        addr.port(),
        opts.user,
        if opts.tls.is_some() { " sslmode=require" } else { "" },
    );
    server.wait().await?;
    Ok(())
}

/// Log lines of the scheduler, executor and server (Ballista's and
/// pgwire's, through `log`) on stderr: `RUST_LOG` when set, else warnings,
/// and Ballista's and ours at info. (Ballista writes a query's settings, S3
/// secrets included, only at trace level: do not run a node with
/// RUST_LOG=trace outside a test.)
#[cfg(any(feature = "cluster", feature = "serve"))]
fn init_node_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,ballista_scheduler=info,ballista_executor=info,supportfunnel=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// `supportfunnel scheduler`.
#[cfg(feature = "cluster")]
async fn scheduler(args: crate::cli::args::SchedulerArgs) -> Result<()> {
    use supportfunnel::cluster::scheduler::{run_scheduler, SchedulerOptions};
    init_node_logging();
    let opts = SchedulerOptions {
        bind: args.bind,
        external_host: args.external_host,
        executor_timeout: std::time::Duration::from_secs(args.executor_timeout),
    };
    run_scheduler(&opts, |addr| {
        eprintln!(
            "scheduler listening on {addr} (supportfunnel {}; clients use --cluster df://{}:{})",
            supportfunnel::cluster::node_version(),
            opts.external_host
                .clone()
                .unwrap_or_else(|| addr.ip().to_string()),
            addr.port()
        )
    })
    .await?;
    Ok(())
}

/// `supportfunnel executor`.
#[cfg(feature = "cluster")]
async fn executor(args: crate::cli::args::ExecutorArgs) -> Result<()> {
    use supportfunnel::cluster::executor::{run_executor, ExecutorOptions};
    use supportfunnel::cluster::ClusterUrl;
    let text = if args.scheduler.contains("://") {
        args.scheduler.clone()
    } else {
        format!("df://{}", args.scheduler)
    };
    let scheduler = ClusterUrl::parse(&text).context("--scheduler")?;
    let memory_limit = args
        .memory_limit
        .as_deref()
        .map(supportfunnel::settings::options::parse_bytes)
        .transpose()
        .context("--memory-limit")?
        .map(|n| n as u64);
    let grpc_port = match args.grpc_port {
        Some(p) => p,
        None => args
            .bind
            .port()
            .checked_add(1)
            .context("--bind port 65535 leaves no --grpc-port: give one")?,
    };
    init_node_logging();
    run_executor(&ExecutorOptions {
        scheduler,
        bind_host: args.bind.ip().to_string(),
        port: args.bind.port(),
        grpc_port,
        external_host: args.external_host,
        work_dir: args.work_dir,
        concurrent_tasks: args.concurrent_tasks.unwrap_or(0) as usize,
        memory_limit,
        heartbeat_interval: std::time::Duration::from_secs(args.heartbeat_interval),
    })
    .await?;
    Ok(())
}

/// On a cluster, an error of a query said as the cluster's (see
/// [`supportfunnel::cluster::client::explain`]).
fn on_cluster_error(settings: &Settings, e: supportfunnel::Error) -> supportfunnel::Error {
    #[cfg(feature = "cluster")]
    if let Some(url) = &settings.engine.cluster {
        return supportfunnel::cluster::client::explain(url, &settings.engine.tables, e);
    }
    let _ = settings;
    e
}

/// Flags over the config over the defaults (the library's one rule), and
/// the allocator set for a memory limit.
fn settings(flags: &Flags, config: &Config) -> Result<Settings> {
    let settings = Settings::resolve(flags, config, &Env::from_process())?;
    if let Some(limit) = settings.engine.memory_limit {
        purge_freed_memory_for(limit);
    }
    Ok(settings)
}

/// Says on stderr which files of the tables are not read (hidden, nested,
/// not Parquet), one line per table.
fn warn_skipped(engine: &supportfunnel::Engine) {
    for w in engine.tables.iter().filter_map(|t| t.warning.as_deref()) {
        eprintln!("warning: {w}");
    }
}

/// A file or object to write to, parsed.
fn output_location(output: &Option<String>) -> Result<Option<Location>> {
    output
        .as_deref()
        .map(|o| Location::parse(o).context("--output"))
        .transpose()
}

/// `supportfunnel report`.
async fn report(config: &Config, args: ReportArgs) -> Result<()> {
    let output = output_location(&args.output)?;
    args.format.check_destination(output.as_ref())?;
    let settings = settings(&args.flags(), config)?;
    let engine = build_context(&settings.engine).await?;
    warn_skipped(&engine);
    let detail = args
        .detail
        .as_deref()
        .map(|m| {
            let period = args
                .period
                .as_deref()
                .map(PeriodChoice::parse)
                .transpose()?;
            DetailRequest::new(m, args.segment.clone(), period)
        })
        .transpose()?;
    if detail.is_some() && args.format == Format::Html {
        anyhow::bail!("--detail writes table, csv, json or parquet; html is the report's page");
    }
    let progress = CliProgress::new(args.verbose);
    let opts = ReportOptions {
        from: args.from,
        to: args.to,
        tz: Some(settings.tz),
        tags: settings.filters.tags.clone(),
        content_types: settings.filters.content_types.clone(),
        senders: settings.filters.senders.clone(),
        progress: progress.clone().map(|p| p as ProgressRef),
        keep_sessions: false,
        now: Some(settings.now),
    };
    if let Some(request) = detail {
        let mut details = run_details(&engine, &opts, std::slice::from_ref(&request)).await?;
        drop(progress);
        let d = details.pop().context("no detail came back")?;
        return output::write_result_to(
            &engine.ctx,
            args.format,
            &d.schema,
            &d.batches,
            output.as_ref(),
        )
        .await
        .map_err(Into::into);
    }
    // One report and the process ends: the build need not outlive the
    // report's own tables (a detail run reads more relations after them).
    supportfunnel::tables::native::node::single_use(&engine.ctx);
    let report = run_report(&engine, &opts).await?;
    drop(progress);
    if let Some(anchor) = &report.anchor {
        explain_default_period(anchor, report.periods.days(), args.verbose);
    }
    if args.verbose {
        if let Some(profile) = supportfunnel::tables::native::node::last_profile(&engine.ctx) {
            eprintln!("{profile}");
        }
        if let Some(kib) = peak_memory_kib() {
            eprintln!("peak memory: {} MiB", kib / 1024);
        }
    }
    if matches!(args.format, Format::Table | Format::Html) {
        let text = if args.format == Format::Html {
            supportfunnel::render::html::render(&report, &settings.filters)?
        } else {
            table::render(&rows_of(&report.batch), &report.periods)
        };
        match &output {
            None => print!("{text}"),
            Some(loc) => {
                supportfunnel::io::readonly::Inputs::of(&engine.ctx).check_output(loc)?;
                output::put_atomically(&engine.ctx, loc, text.into_bytes()).await?
            }
        }
    } else {
        output::write_result_to(
            &engine.ctx,
            args.format,
            &report.batch.schema(),
            std::slice::from_ref(&report.batch),
            output.as_ref(),
        )
        .await?;
    }
    Ok(())
}

/// Says on stderr what placed the default period: always when events dated
/// after now were left out, with `--verbose` otherwise.
fn explain_default_period(anchor: &Anchor, days: i64, verbose: bool) {
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
    } else if verbose {
        eprintln!(
            "default period: the {days} full days before the latest event, {}",
            at(anchor.latest)
        );
    }
}

/// `supportfunnel sql`.
async fn sql(config: &Config, args: SqlArgs) -> Result<()> {
    let text = match (&args.query, &args.file) {
        (Some(q), _) => Some(q.clone()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading SQL from stdin")?;
            Some(s)
        }
        (None, Some(f)) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, None) => None,
    };
    if text.is_none() && args.output.is_some() {
        anyhow::bail!(
            "--output needs a QUERY or -f FILE (the interactive prompt prints to the terminal)"
        );
    }
    if args.format == Format::Html {
        anyhow::bail!(
            "--format html is the report's page (`supportfunnel report --format html`); \
             sql writes table, csv, json or parquet"
        );
    }
    let output = output_location(&args.output)?;
    args.format.check_destination(output.as_ref())?;
    let settings = settings(&args.engine.flags(), config)?;
    let engine = supportfunnel::open(&settings.engine, settings.tz).await?;
    warn_skipped(&engine);
    let Some(text) = text else {
        return prompt::repl(&engine.ctx).await;
    };
    let results = query::run_script(&engine.ctx, &text)
        .await
        .map_err(|e| on_cluster_error(&settings, e))?;
    match &output {
        // a file gets the last statement's result only
        Some(loc) => {
            let last = results
                .last()
                .context("no statement gave a result to write")?;
            output::write_result_to(
                &engine.ctx,
                args.format,
                &last.schema,
                &last.batches,
                Some(loc),
            )
            .await?;
        }
        None => {
            for r in &results {
                output::write_result(args.format, &r.schema, &r.batches, None)?;
            }
        }
    }
    for w in results.iter().flat_map(|r| &r.warnings) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// `supportfunnel run`: the scheduled job.
async fn run(has_config: bool, config: &Config, args: RunArgs) -> Result<()> {
    if !has_config {
        anyhow::bail!("run needs --config FILE (the reports and the output location)");
    }
    let settings = settings(&args.engine.flags(), config)?;
    let engine = build_context(&settings.engine).await?;
    warn_skipped(&engine);
    let date = args.date.unwrap_or_else(|| settings.today());
    let summary = run_job_with(
        &engine,
        &settings,
        config,
        date,
        &RunOptions { full: args.full },
    )
    .await?;
    println!("{}", serde_json::to_string(&summary)?);
    for f in &summary.failed {
        eprintln!("error: report `{}`: {}", f.report, f.error);
    }
    let state_error = summary.state.as_ref().and_then(|s| s.error.as_deref());
    if let (Some(e), true) = (state_error, summary.failed.is_empty()) {
        eprintln!("error: {e}");
    }
    if !summary.ok {
        if summary.failed.is_empty() {
            anyhow::bail!("the job's state was not saved; see above");
        }
        anyhow::bail!(
            "{} of {} reports failed; see above",
            summary.failed.len(),
            config.reports.len()
        );
    }
    Ok(())
}

/// `supportfunnel gen`.
fn gen(args: GenArgs) -> Result<()> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(u64::from(args.days));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} days {msg} [{elapsed_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = bar.clone().map(|bar| {
        DayProgress(Arc::new(move |done, _, events| {
            bar.set_position(u64::from(done));
            bar.set_message(format!("{events} events"));
        }))
    });
    let generated = generate(&GenOptions {
        out: args.out.clone(),
        users: args.users,
        days: args.days,
        seed: args.seed,
        start: args.start,
        overwrite: args.overwrite,
        progress,
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let stats = generated.with_context(|| format!("generating into {}", args.out.display()))?;
    eprintln!(
        "wrote {} events and {} messages in {} files to {} in {:.2}s ({:.0} events/s)",
        stats.events,
        stats.messages,
        stats.files,
        args.out.display(),
        stats.seconds,
        stats.events as f64 / stats.seconds.max(1e-9)
    );
    Ok(())
}
