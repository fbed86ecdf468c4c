//! Exact incremental runs (`[state]`): a sequence of incremental job runs
//! over files arriving in random orders gives, at every step, the report
//! and sessions a full recompute over the same files gives; a run killed
//! before its state commit is redone by the next one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::memory_pool::{MemoryPool, MemoryReservation, UnboundedMemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use supportfunnel::build_context;
use supportfunnel::datagen::{generate, GenOptions};
use supportfunnel::job::{run_job_with, JobSummary, RunOptions};
use supportfunnel::settings::config::Config;
use supportfunnel::settings::{Env, Flags, Settings};

use crate::common::{bin, render, stderr, stdout};

/// A job over `inputs` writing to `out`, with a state at `state` (or none:
/// the full recompute it is checked against).
pub fn job_text(inputs: &Path, out: &Path, state: Option<&Path>, format: &str) -> String {
    let mut text = format!(
        r#"
[[tables]]
name = "events"
uri = "{events}"

[[tables]]
name = "messages"
uri = "{messages}"

[output]
location = "{out}/report"
sessions_location = "{out}/sessions"
format = "{format}"

[[reports]]
name = "daily"
period = "daily"
sessions = true

[[reports]]
name = "two_days"
period = "2d"
"#,
        events = inputs.join("events").display(),
        messages = inputs.join("messages").display(),
        out = out.display(),
    );
    if let Some(state) = state {
        text.push_str(&format!("\n[state]\nlocation = \"{}\"\n", state.display()));
    }
    text
}

async fn run(text: &str, date: NaiveDate, full: bool) -> JobSummary {
    run_on(text, date, full, false).await
}

/// [`run`], with the SQL views instead of the operators when `sql_views`.
async fn run_on(text: &str, date: NaiveDate, full: bool, sql_views: bool) -> JobSummary {
    run_limited(text, date, full, sql_views, None).await.0
}

/// [`run_on`] under a memory limit of `limit` bytes; also how many times
/// the operators made their build.
async fn run_limited(
    text: &str,
    date: NaiveDate,
    full: bool,
    sql_views: bool,
    limit: Option<usize>,
) -> (JobSummary, usize) {
    let config = Config::parse(text, "job.toml").unwrap();
    let mut settings = Settings::resolve(&Flags::default(), &config, &Env::from_process()).unwrap();
    settings.engine.sql_views = sql_views;
    settings.engine.memory_limit = limit;
    let engine = build_context(&settings.engine).await.unwrap();
    let summary = run_job_with(&engine, &settings, &config, date, &RunOptions { full })
        .await
        .unwrap();
    assert!(summary.ok, "{summary:?}");
    let builds = engine
        .ctx
        .state()
        .config()
        .get_extension::<supportfunnel::tables::native::node::NativeCache>()
        .map_or(0, |c| c.builds());
    (summary, builds)
}

/// A memory pool that refuses one consumer (by name), and only that,
/// counting its refusals: the one-pass fold's set of started conversations
/// (the fold must then fall back to the reference statements), or the
/// rows the scan's tap keeps whole (the fold must then read the events
/// itself).
#[derive(Debug)]
struct Refuses {
    consumer: &'static str,
    inner: UnboundedMemoryPool,
    refused: AtomicUsize,
}

impl Refuses {
    fn new(consumer: &'static str) -> Self {
        Self {
            consumer,
            inner: UnboundedMemoryPool::default(),
            refused: AtomicUsize::new(0),
        }
    }
}

impl std::fmt::Display for Refuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Refuses({})", self.consumer)
    }
}

impl MemoryPool for Refuses {
    fn name(&self) -> &str {
        "refuses"
    }
    fn grow(&self, r: &MemoryReservation, additional: usize) {
        self.inner.grow(r, additional)
    }
    fn shrink(&self, r: &MemoryReservation, shrink: usize) {
        self.inner.shrink(r, shrink)
    }
    fn try_grow(&self, r: &MemoryReservation, additional: usize) -> DFResult<()> {
        if r.consumer().name() == self.consumer && additional > 0 {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the test refuses {additional} bytes to {}",
                r.consumer().name()
            )));
        }
        self.inner.try_grow(r, additional)
    }
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
}

/// [`run`] (the operators, a full run) with `pool` as the engine's memory
/// pool.
async fn run_with_pool(text: &str, date: NaiveDate, pool: Arc<dyn MemoryPool>) -> JobSummary {
    let config = Config::parse(text, "job.toml").unwrap();
    let settings = Settings::resolve(&Flags::default(), &config, &Env::from_process()).unwrap();
    let mut engine = build_context(&settings.engine).await.unwrap();
    let state = engine.ctx.state();
    let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
        .with_memory_pool(pool)
        .build_arc()
        .unwrap();
    engine.ctx = SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .build(),
    );
    let summary = run_job_with(
        &engine,
        &settings,
        &config,
        date,
        &RunOptions { full: true },
    )
    .await
    .unwrap();
    assert!(summary.ok, "{summary:?}");
    summary
}

/// Every result the job wrote under `out` for `date`, as sorted text rows
/// per file.
async fn results(out: &Path, date: NaiveDate) -> Vec<(String, Vec<String>)> {
    let ctx = SessionContext::new();
    let mut all = Vec::new();
    for table in ["report", "sessions"] {
        for report in ["daily", "two_days"] {
            let file = out
                .join(table)
                .join(format!("report={report}"))
                .join(format!("report_date={date}"))
                .join("data.parquet");
            if !file.exists() {
                continue;
            }
            let batches = ctx
                .read_parquet(file.display().to_string(), Default::default())
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let mut rows = render(&batches);
            rows.sort();
            all.push((format!("{table}/{report}"), rows));
        }
    }
    all
}

/// Copies one generated day's files (events and messages) into `inputs`.
fn arrive_day(src: &Path, inputs: &Path, day: NaiveDate) {
    for table in ["events", "messages"] {
        let from = src.join(table).join(format!("date={day}"));
        if !from.exists() {
            continue;
        }
        let to = inputs.join(table).join(format!("date={day}"));
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

/// Reads strings as Utf8, as the generator writes them, so that the files
/// a test derives have the schema of the generated ones.
fn plain_ctx() -> SessionContext {
    SessionContext::new_with_config(datafusion::prelude::SessionConfig::new().set_bool(
        "datafusion.execution.parquet.schema_force_view_types",
        false,
    ))
}

/// Writes the result of `sql` (over `events` = what has arrived so far) as
/// a new Parquet file `name` in day `day`'s events directory.
async fn derived_file(inputs: &Path, day: NaiveDate, name: &str, sql: &str) {
    derived_file_of("events", inputs, day, name, sql).await
}

/// [`derived_file`] for table `table` (`events` or `messages`).
async fn derived_file_of(table: &str, inputs: &Path, day: NaiveDate, name: &str, sql: &str) {
    let ctx = plain_ctx();
    ctx.register_parquet(
        table,
        &inputs.join(table).display().to_string(),
        Default::default(),
    )
    .await
    .unwrap();
    let dir = inputs.join(table).join(format!("date={day}"));
    std::fs::create_dir_all(&dir).unwrap();
    let df = ctx.sql(sql).await.unwrap();
    let batches = df.collect().await.unwrap();
    if batches.iter().map(|b| b.num_rows()).sum::<usize>() == 0 {
        return;
    }
    let schema = batches[0].schema();
    let file = std::fs::File::create(dir.join(name)).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

/// What may happen between two runs.
#[derive(Debug, Clone)]
enum Arrival {
    /// The next generated day arrives (in order, or an earlier one late).
    Day(usize),
    /// Copies of some arrived events, their `ts` moved by this many hours.
    Duplicates(i64),
    /// Conversations started earlier get closed by a bot now.
    LateCloses,
    /// An arrived file is rewritten with one row less.
    Rewrite,
    /// Conversations started earlier are started again now (new event ids):
    /// the earliest start keeps them.
    Restarts,
}

fn arrivals(days: usize) -> impl Strategy<Value = Vec<Arrival>> {
    // A day order that is mostly chronological with a few days swapped.
    let swaps = proptest::collection::vec((0..days, 0..days), 0..3);
    let extras = proptest::collection::vec(
        (
            0..days + 2,
            prop_oneof![
                (-30i64..30).prop_map(Arrival::Duplicates),
                Just(Arrival::LateCloses),
                Just(Arrival::Rewrite),
                Just(Arrival::Restarts),
            ],
        ),
        0..4,
    );
    (swaps, extras).prop_map(move |(swaps, extras)| {
        let mut order: Vec<usize> = (0..days).collect();
        for (a, b) in swaps {
            order.swap(a, b);
        }
        let mut plan: Vec<Arrival> = order.into_iter().map(Arrival::Day).collect();
        for (at, extra) in extras {
            // never before the first day
            plan.insert(at.clamp(1, plan.len()), extra);
        }
        plan
    })
}

const START: (i32, u32, u32) = (2026, 3, 1);

/// Runs `plan` incrementally, comparing with a full recompute after each
/// step. Returns how many steps ran incrementally.
async fn check_plan(seed: u64, days: usize, plan: &[Arrival]) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let start = NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap();
    generate(&GenOptions {
        out: src.clone(),
        users: 150,
        days: days as u32,
        seed,
        start,
        overwrite: false,
        progress: None,
    })
    .unwrap();
    let inputs = tmp.path().join("inputs");
    let state = tmp.path().join("state");
    let (inc_out, full_out) = (tmp.path().join("inc"), tmp.path().join("full"));
    let inc = job_text(&inputs, &inc_out, Some(&state), "parquet");
    let full = job_text(&inputs, &full_out, None, "parquet");
    let mut latest = start;
    let mut incremental = 0;
    let mut extra = 0;
    for step in plan {
        extra += 1;
        match step {
            Arrival::Day(d) => {
                let day = start + Duration::days(*d as i64);
                arrive_day(&src, &inputs, day);
                latest = latest.max(day);
            }
            Arrival::Duplicates(hours) => {
                derived_file(
                    &inputs,
                    latest,
                    &format!("dups-{extra}.parquet"),
                    &format!(
                        "SELECT event_id, user_id, ts + INTERVAL '{hours} hours' AS ts, event_type, \
                         channel, article_id, conversation_id, actor, rating FROM events \
                         WHERE substr(md5(event_id), 1, 1) IN ('0', '1', '2')"
                    ),
                )
                .await
            }
            Arrival::LateCloses => {
                derived_file(
                    &inputs,
                    latest,
                    &format!("closes-{extra}.parquet"),
                    &format!(
                        "SELECT concat('late-close-{extra}-', conversation_id) AS event_id, user_id, \
                         arrow_cast(TIMESTAMP '{latest} 12:00:00', 'Timestamp(Microsecond, Some(\"UTC\"))') AS ts, \
                         'conversation_closed' AS event_type, channel, article_id, conversation_id, \
                         'bot' AS actor, rating FROM events WHERE event_type = 'conversation_started'"
                    ),
                )
                .await
            }
            Arrival::Restarts => {
                derived_file(
                    &inputs,
                    latest,
                    &format!("restarts-{extra}.parquet"),
                    &format!(
                        "SELECT concat('restart-{extra}-', event_id) AS event_id, user_id, \
                         arrow_cast(TIMESTAMP '{latest} 13:00:00', 'Timestamp(Microsecond, Some(\"UTC\"))') AS ts, \
                         event_type, channel, article_id, conversation_id, actor, rating FROM events \
                         WHERE event_type = 'conversation_started' \
                         AND substr(md5(event_id), 1, 1) IN ('0', '1', '2', '3', '4')"
                    ),
                )
                .await
            }
            Arrival::Rewrite => {
                let dir = inputs.join("events").join(format!("date={latest}"));
                let file = dir.join("part-00000.parquet");
                if file.exists() {
                    let ctx = plain_ctx();
                    let batches = ctx
                        .read_parquet(file.display().to_string(), Default::default())
                        .await
                        .unwrap()
                        .collect()
                        .await
                        .unwrap();
                    let schema = batches[0].schema();
                    let out = std::fs::File::create(&file).unwrap();
                    let mut w = parquet::arrow::ArrowWriter::try_new(out, schema, None).unwrap();
                    let mut dropped = false;
                    for b in &batches {
                        if !dropped && b.num_rows() > 1 {
                            w.write(&b.slice(1, b.num_rows() - 1)).unwrap();
                            dropped = true;
                        } else {
                            w.write(b).unwrap();
                        }
                    }
                    w.close().unwrap();
                }
            }
        }
        let date = latest + Duration::days(1);
        let a = run(&inc, date, false).await;
        run(&full, date, false).await;
        let state_run = a.state.clone().expect("a run with [state] says how it ran");
        if state_run.mode == "incremental" {
            incremental += 1;
        }
        let (got, want) = (
            results(&inc_out, date).await,
            results(&full_out, date).await,
        );
        assert_eq!(got.len(), 3, "daily, its sessions and two_days");
        assert_eq!(
            got, want,
            "after {step:?} (run {date}, {state_run:?}) the incremental results differ"
        );
    }
    eprintln!("{incremental} of {} runs incremental: {plan:?}", plan.len());
    incremental
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn incremental_runs_equal_full_recomputes_at_every_step(
        seed in 0u64..1000,
        plan in arrivals(7),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(check_plan(seed, 7, &plan));
    }
}

#[tokio::test]
async fn days_in_order_run_incrementally_and_exactly() {
    let plan: Vec<Arrival> = (0..6)
        .map(Arrival::Day)
        .chain([
            Arrival::Duplicates(0),
            Arrival::Restarts,
            Arrival::LateCloses,
            Arrival::Duplicates(5),
            Arrival::Day(6),
        ])
        .collect();
    let incremental = check_plan(7, 7, &plan).await;
    // the first run builds the state; in-order days and same-day extras
    // after it are incremental
    assert!(incremental >= 7, "only {incremental} incremental runs");
}

/// Runs the state-less job `full` for `date` and checks that its results
/// equal the incremental job's.
async fn same_as_full(full: &str, inc_out: &Path, full_out: &Path, date: NaiveDate) {
    run(full, date, false).await;
    assert_eq!(results(inc_out, date).await, results(full_out, date).await);
}

/// `supportfunnel run` with `--config`, `--date` and the given fail point.
fn run_bin(config: &Path, date: NaiveDate, fail: Option<&str>, full: bool) -> std::process::Output {
    let mut c = bin();
    c.args(["run", "--config"])
        .arg(config)
        .args(["--date", &date.to_string()]);
    if full {
        c.arg("--full");
    }
    match fail {
        Some(f) => c.env("SUPPORTFUNNEL_FAILPOINT", f),
        None => c.env_remove("SUPPORTFUNNEL_FAILPOINT"),
    };
    c.output().unwrap()
}

#[tokio::test]
async fn a_run_killed_before_its_state_commit_is_redone_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = generated(tmp.path(), 150, 5, 3);
    let start = NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap();
    let inputs = tmp.path().join("inputs");
    let (inc_out, full_out) = (tmp.path().join("inc"), tmp.path().join("full"));
    let config = tmp.path().join("job.toml");
    std::fs::write(
        &config,
        job_text(
            &inputs,
            &inc_out,
            Some(&tmp.path().join("state")),
            "parquet",
        ),
    )
    .unwrap();
    let full = job_text(&inputs, &full_out, None, "parquet");
    for d in 0..3 {
        arrive_day(&src, &inputs, start + Duration::days(d));
    }
    let date = start + Duration::days(3);
    let first = run_bin(&config, date, None, false);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("\"mode\":\"full\""),
        "{}",
        stdout(&first)
    );

    arrive_day(&src, &inputs, date);
    let date = date + Duration::days(1);
    for point in ["before-state", "before-state-commit"] {
        let killed = run_bin(&config, date, Some(point), false);
        assert!(
            !killed.status.success(),
            "the fail point {point} stops the run"
        );
        assert!(stderr(&killed).contains(point), "{}", stderr(&killed));
    }
    let again = run_bin(&config, date, None, false);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("\"mode\":\"incremental\""),
        "the previous state is still valid: {}",
        stdout(&again)
    );
    same_as_full(&full, &inc_out, &full_out, date).await;

    // after the commit, a killed garbage collection changes nothing either
    arrive_day(&src, &inputs, date);
    let date = date + Duration::days(1);
    let killed = run_bin(&config, date, Some("after-state-commit"), false);
    assert!(!killed.status.success());
    let again = run_bin(&config, date, None, false);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("\"mode\":\"incremental\""),
        "the previous state is still valid: {}",
        stdout(&again)
    );
    same_as_full(&full, &inc_out, &full_out, date).await;

    // --full recomputes on request, and says so
    let forced = run_bin(&config, date, None, true);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(
        stdout(&forced).contains("\"mode\":\"full\",\"reason\":\"asked for (--full)\""),
        "{}",
        stdout(&forced)
    );
    assert_eq!(
        results(&inc_out, date).await,
        results(&full_out, date).await
    );

    // a deleted input file: a full recompute, said in the summary
    std::fs::remove_dir_all(inputs.join("events").join(format!("date={start}"))).unwrap();
    let after = run_bin(&config, date, None, false);
    assert!(after.status.success(), "{}", stderr(&after));
    assert!(stdout(&after).contains("was deleted"), "{}", stdout(&after));
    same_as_full(&full, &inc_out, &full_out, date).await;
}

#[tokio::test]
async fn incremental_runs_with_inputs_state_and_results_on_s3() {
    use crate::s3::{get, sample_on_s3};
    use crate::s3_server::{S3Server, ACCESS_KEY, SECRET_KEY};
    let server = S3Server::start(&["lake", "out"]);
    sample_on_s3(&server).await;
    let text = |out: &str, state: bool| {
        let mut t = format!(
            r#"
[[tables]]
name = "events"
uri = "s3://lake/support/events/"

[[tables]]
name = "messages"
uri = "s3://lake/support/messages/"

[storage.s3]
region = "us-east-1"
endpoint = "{endpoint}"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
allow_http = true

[output]
location = "s3://out/{out}/report"
sessions_location = "s3://out/{out}/sessions"

[[reports]]
name = "daily"
period = "daily"
sessions = true
"#,
            endpoint = server.endpoint
        );
        if state {
            t.push_str("\n[state]\nlocation = \"s3://out/state\"\n");
        }
        t
    };
    let (inc, full) = (text("inc", true), text("full", false));
    let key = |out: &str, table: &str, d: NaiveDate| {
        format!("{out}/{table}/report=daily/report_date={d}/data.parquet")
    };
    let d1 = NaiveDate::from_ymd_opt(2026, 2, 20).unwrap();
    let first = run(&inc, d1, false).await;
    assert_eq!(first.state.unwrap().mode, "full");
    let d2 = d1 + Duration::days(1);
    // a late file: copies of a day's events, arriving after the first run
    let tmp = tempfile::tempdir().unwrap();
    let late = tmp.path().join("date=2026-02-20");
    std::fs::create_dir_all(&late).unwrap();
    std::fs::copy(
        Path::new(&crate::common::sample("events")).join("date=2026-02-20/part-00000.parquet"),
        late.join("late-copy.parquet"),
    )
    .unwrap();
    server.upload(tmp.path(), "lake", "support/events").await;
    let second = run(&inc, d2, false).await;
    let state = second.state.unwrap();
    assert_eq!(
        (state.mode, state.new_files),
        ("incremental", 1),
        "{state:?}"
    );
    run(&full, d2, false).await;
    for table in ["report", "sessions"] {
        assert_eq!(
            get(&server, &key("inc", table, d2)).await,
            get(&server, &key("full", table, d2)).await,
            "{table}"
        );
    }
}

/// `days` generated days from [`START`] under `dir/src`.
fn generated(dir: &Path, users: u64, days: u32, seed: u64) -> PathBuf {
    let src = dir.join("src");
    generate(&GenOptions {
        out: src.clone(),
        users,
        days,
        seed,
        start: NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap(),
        overwrite: false,
        progress: None,
    })
    .unwrap();
    src
}

/// The state's manifest as JSON.
fn manifest(state: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap()
}

/// A state file the manifest names under `key` (`index` into a list).
fn state_file(state: &Path, key: &str, index: Option<usize>) -> PathBuf {
    let m = manifest(state);
    let name = match index {
        Some(i) => m[key][i].as_str().unwrap().to_string(),
        None => m[key].as_str().unwrap().to_string(),
    };
    state.join("data").join(name)
}

#[tokio::test]
async fn a_state_file_lost_changed_or_edited_is_never_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = generated(tmp.path(), 150, 14, 11);
    let start = NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap();
    let inputs = tmp.path().join("inputs");
    let state = tmp.path().join("state");
    let (inc_out, full_out) = (tmp.path().join("inc"), tmp.path().join("full"));
    let inc = job_text(&inputs, &inc_out, Some(&state), "parquet");
    let full = job_text(&inputs, &full_out, None, "parquet");
    // Three runs: the state holds three event-index segments.
    let mut day = start;
    for _ in 0..3 {
        arrive_day(&src, &inputs, day);
        day += Duration::days(1);
        run(&inc, day, false).await;
    }
    assert!(manifest(&state)["event_index"].as_array().unwrap().len() >= 2);

    // What each case does to the state before the next run, and the
    // reason the run must give for recomputing in full.
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 5] = [
        (
            "a lost index segment, and copies of old events arriving",
            |state| std::fs::remove_file(state_file(state, "event_index", Some(1))).unwrap(),
            "is missing",
        ),
        (
            "an empty live-messages file",
            |state| std::fs::write(state_file(state, "live_messages", None), b"").unwrap(),
            "bytes, state.json says",
        ),
        (
            "live events and live messages swapped",
            |state| {
                let (e, m) = (
                    state_file(state, "live_events", None),
                    state_file(state, "live_messages", None),
                );
                let (eb, mb) = (std::fs::read(&e).unwrap(), std::fs::read(&m).unwrap());
                std::fs::write(&e, mb).unwrap();
                std::fs::write(&m, eb).unwrap();
            },
            "state file data/",
        ),
        (
            "an index segment changed in place, same size",
            |state| {
                let f = state_file(state, "event_index", Some(0));
                let mut bytes = std::fs::read(&f).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x20;
                std::fs::write(&f, bytes).unwrap();
            },
            "was changed since it was written",
        ),
        (
            "a counter edited in state.json",
            |state| {
                let mut m = manifest(state);
                let n = m["counters"]["events_rows_read"].as_u64().unwrap();
                m["counters"]["events_rows_read"] = (n + 7).into();
                std::fs::write(state.join("state.json"), m.to_string()).unwrap();
            },
            "state.json does not match its checksum",
        ),
    ];
    for (what, damage, reason) in cases {
        damage(&state);
        arrive_day(&src, &inputs, day);
        // copies of arrived events with new times: duplicates that only
        // the whole index tells apart
        derived_file(
            &inputs,
            day,
            &format!("copies-{day}.parquet"),
            "SELECT event_id, user_id, ts + INTERVAL '3 hours' AS ts, event_type, channel, \
             article_id, conversation_id, actor, rating FROM events \
             WHERE substr(md5(event_id), 1, 1) IN ('0', '1', '2', '3')",
        )
        .await;
        day += Duration::days(1);
        let summary = run(&inc, day, false).await;
        let state_run = summary.state.unwrap();
        assert_eq!(state_run.mode, "full", "{what}: {state_run:?}");
        let why = state_run.reason.unwrap_or_default();
        assert!(why.contains(reason), "{what}: {why}");
        same_as_full(&full, &inc_out, &full_out, day).await;
        // and the state rebuilt serves the next run again
        arrive_day(&src, &inputs, day);
        day += Duration::days(1);
        let next = run(&inc, day, false).await.state.unwrap();
        assert_eq!(next.mode, "incremental", "{what}, after: {next:?}");
        same_as_full(&full, &inc_out, &full_out, day).await;
    }
}

#[test]
fn an_unusable_state_still_prints_the_summary_and_fails_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs");
    let src = generated(tmp.path(), 100, 3, 5);
    let start = NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap();
    for d in 0..3 {
        arrive_day(&src, &inputs, start + Duration::days(d));
    }
    // The state's location is a file: nothing can be written there.
    let blocked = tmp.path().join("state-is-a-file");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let out = tmp.path().join("out");
    let config = tmp.path().join("job.toml");
    std::fs::write(&config, job_text(&inputs, &out, Some(&blocked), "parquet")).unwrap();
    let o = run_bin(&config, start + Duration::days(3), None, false);
    assert!(!o.status.success());
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    // the results were written, and the summary says the state was not
    assert!(
        !summary["written"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    assert_eq!(summary["ok"], false);
    let error = summary["state"]["error"].as_str().unwrap();
    assert!(error.contains("state-is-a-file"), "{error}");
    let err = stderr(&o);
    assert!(err.contains("error: the state at"), "{err}");
    assert!(err.contains("the job's state was not saved"), "{err}");
}

#[test]
fn a_killed_run_leaves_its_temporary_directories_to_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let src = generated(tmp.path(), 100, 4, 9);
    let start = NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap();
    let inputs = tmp.path().join("inputs");
    for d in 0..3 {
        arrive_day(&src, &inputs, start + Duration::days(d));
    }
    let temp = tmp.path().join("temp");
    let config = tmp.path().join("job.toml");
    std::fs::write(
        &config,
        job_text(
            &inputs,
            &tmp.path().join("out"),
            Some(&tmp.path().join("state")),
            "parquet",
        ) + &format!("\n[engine]\ntemp_dir = \"{}\"\n", temp.display()),
    )
    .unwrap();
    let date = start + Duration::days(3);
    assert!(run_bin(&config, date, None, false).status.success());
    arrive_day(&src, &inputs, date);
    // (with a temp directory of its own, the run is still incremental)
    let timed = bin()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--date", &(date + Duration::days(1)).to_string()])
        .output()
        .unwrap();
    assert!(
        stdout(&timed).contains("\"mode\":\"incremental\""),
        "{}",
        stdout(&timed)
    );
    // Killed (abort, as kill -9) in the middle of an incremental run: its
    // directories stay behind.
    let killed = run_bin(
        &config,
        date + Duration::days(1),
        Some("before-state"),
        false,
    );
    assert!(!killed.status.success());
    let left = |temp: &Path| -> Vec<String> {
        std::fs::read_dir(temp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("supportfunnel-"))
            .collect()
    };
    let litter = left(&temp);
    assert!(
        litter
            .iter()
            .any(|n| n.starts_with("supportfunnel-incremental-")),
        "{litter:?}"
    );
    // The next command sweeps what belongs to dead processes.
    let again = run_bin(&config, date + Duration::days(1), None, false);
    assert!(again.status.success(), "{}", stderr(&again));
    let now = left(&temp);
    assert!(
        litter.iter().all(|n| !now.contains(n)),
        "left by the killed run: {litter:?}, now: {now:?}"
    );
}

/// The rows of every table of a state, sorted per table, and its counters.
async fn state_rows(state: &Path) -> Vec<(String, Vec<String>)> {
    let m = manifest(state);
    let ctx = SessionContext::new();
    let mut all = vec![("counters".to_string(), vec![m["counters"].to_string()])];
    for key in [
        "anchors",
        "live_events",
        "live_messages",
        "event_index",
        "message_index",
        "started",
    ] {
        let names: Vec<String> = match &m[key] {
            serde_json::Value::Array(list) => list
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
            v => vec![v.as_str().unwrap().to_string()],
        };
        let mut rows = Vec::new();
        for name in names {
            let batches = ctx
                .read_parquet(
                    state.join("data").join(name).display().to_string(),
                    Default::default(),
                )
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            rows.extend(render(&batches));
        }
        rows.sort();
        all.push((key.to_string(), rows));
    }
    all
}

/// A full run folds in one pass over the history when the operators build
/// (`one_pass.rs`); the reference statements of `fold.sql` fold with the
/// SQL views, and with the operators where the pool refuses the pass (the
/// fold falls back to the reference statements). All write the same state,
/// on history with copies whose winner moves across the frontier,
/// identical copies, restarted conversations, lifecycle rows before their
/// conversation's start and lifecycle rows of conversations that never
/// start.
#[tokio::test]
async fn the_one_pass_fold_writes_the_reference_state() {
    let tmp = tempfile::tempdir().unwrap();
    let src = generated(tmp.path(), 150, 10, 5);
    let start = NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap();
    let inputs = tmp.path().join("inputs");
    for d in 0..10 {
        arrive_day(&src, &inputs, start + Duration::days(d));
    }
    let last = start + Duration::days(9);
    let copies = "event_id, user_id, ts + INTERVAL '{h} hours' AS ts, event_type, channel, \
                  article_id, conversation_id, actor, rating FROM events \
                  WHERE substr(md5(event_id), 1, 1) IN ('{a}', '{b}')";
    for (i, (h, a, b)) in [(-30, "0", "1"), (40, "1", "2"), (0, "3", "4")]
        .into_iter()
        .enumerate()
    {
        let sql = copies
            .replace("{h}", &h.to_string())
            .replace("{a}", a)
            .replace("{b}", b);
        derived_file(
            &inputs,
            last,
            &format!("copies-{i}.parquet"),
            &format!("SELECT {sql}"),
        )
        .await;
    }
    derived_file(
        &inputs,
        last,
        "early-lifecycle.parquet",
        &format!(
            "SELECT concat('early-', event_id) AS event_id, user_id, ts - INTERVAL '5 days' AS ts, \
             'bot_answer' AS event_type, channel, article_id, conversation_id, actor, rating \
             FROM events WHERE event_type = 'conversation_started' AND ts >= TIMESTAMP '{last}' \
             UNION ALL \
             SELECT concat('never-', event_id), user_id, ts, 'conversation_closed', channel, \
             article_id, concat('never-', conversation_id), 'bot', rating \
             FROM events WHERE event_type = 'conversation_started'"
        ),
    )
    .await;
    // Replies filed in the first day's files, before their conversations'
    // starts in the order the scan reads: the scan cannot fold them as it
    // reads them, the fold finds their starts afterwards.
    derived_file(
        &inputs,
        start,
        "replies-filed-early.parquet",
        &format!(
            "SELECT concat('filed-early-', event_id) AS event_id, user_id, \
             ts + INTERVAL '1 hour' AS ts, 'teammate_reply' AS event_type, channel, article_id, \
             conversation_id, 'teammate' AS actor, rating FROM events \
             WHERE event_type = 'conversation_started' AND ts > TIMESTAMP '{start}' + INTERVAL '2 days' \
             AND ts < TIMESTAMP '{last}' - INTERVAL '2 days'"
        ),
    )
    .await;
    derived_file(
        &inputs,
        last,
        "restarts.parquet",
        "SELECT concat('restart-', event_id) AS event_id, user_id, ts + INTERVAL '2 days' AS ts, \
         event_type, channel, article_id, conversation_id, actor, rating FROM events \
         WHERE event_type = 'conversation_started' AND substr(md5(event_id), 1, 1) IN ('5', '6')",
    )
    .await;
    // Deliveries: copies moved a day earlier (the winner crosses the
    // frontier), identical copies, copies without a send time, and
    // deliveries without an id, with and without one.
    derived_file_of(
        "messages",
        &inputs,
        last,
        "message-copies.parquet",
        "SELECT message_id, user_id, sent_at - INTERVAL '1 day' AS sent_at, content_type, sender, \
         tags, opened_at, clicked_at, reacted_at FROM messages \
         WHERE substr(md5(message_id), 1, 1) IN ('0', '1', '2', '3') \
         UNION ALL SELECT * FROM messages WHERE substr(md5(message_id), 1, 1) IN ('4', '5', '6') \
         UNION ALL SELECT message_id, user_id, NULL, content_type, sender, tags, opened_at, \
         clicked_at, reacted_at FROM messages WHERE substr(md5(message_id), 1, 1) IN ('7', '8') \
         UNION ALL SELECT NULL, user_id, sent_at, content_type, sender, tags, opened_at, \
         clicked_at, reacted_at FROM messages WHERE substr(md5(message_id), 1, 1) = '9' \
         UNION ALL SELECT NULL, user_id, NULL, content_type, sender, tags, opened_at, \
         clicked_at, reacted_at FROM messages WHERE substr(md5(message_id), 1, 1) = 'a'",
    )
    .await;
    let date = last + Duration::days(1);
    let (one, limited, reference) = (
        tmp.path().join("one"),
        tmp.path().join("limited"),
        tmp.path().join("reference"),
    );
    // Under a limit the fold's started conversations and anchors are
    // taken from the build before the reports let go of it.
    // Builds made: without a limit one, held through; under it each of the
    // two reports makes its own (each lets go of it), and the fold none.
    // A fold that made the build again would make it three.
    // The operators' scan routes the rows (`scan`) with and without a
    // limit; the SQL views fold with the reference statements.
    for (state, sql_views, limit, builds, how) in [
        (&one, false, None, 1, "scan"),
        (&limited, false, Some(64 << 20), 2, "scan"),
        (&reference, true, None, 0, "statements"),
    ] {
        let name = state.file_name().unwrap().to_string_lossy();
        let out = tmp.path().join(format!("out-{name}"));
        let text = job_text(&inputs, &out, Some(state), "parquet");
        let (summary, made) = run_limited(&text, date, true, sql_views, limit).await;
        let run = summary.state.unwrap();
        assert_eq!(run.mode, "full");
        assert_eq!(run.fold, Some(how), "how the state {name} was folded");
        assert_eq!(made, builds, "builds made for the state {name}");
    }
    // The operators' build, where the pool refuses the rows the scan's tap
    // keeps whole (the fold reads the events itself, in one pass), the
    // pass its set of started conversations (the fold falls back to the
    // reference statements), or the deliveries' pass the ids it keeps
    // (their files are written by the reference statements); and
    // where it refuses the operators every segment, so that each scan
    // task hands its segments over (their conversations' keys start
    // again) after every batch while the tap routes.
    let (untapped, fallback, messages, handed) = (
        tmp.path().join("untapped"),
        tmp.path().join("fallback"),
        tmp.path().join("messages"),
        tmp.path().join("handed"),
    );
    for (state, consumer, how) in [
        (&untapped, "fold tap: rows kept whole", "one pass"),
        (&fallback, "fold: started conversations", "statements"),
        (&messages, "fold: messages", "scan"),
        (&handed, "supportfunnel native operators", "scan"),
    ] {
        let name = state.file_name().unwrap().to_string_lossy();
        let pool = Arc::new(Refuses::new(consumer));
        let out = tmp.path().join(format!("out-{name}"));
        let text = job_text(&inputs, &out, Some(state), "parquet");
        let summary = run_with_pool(&text, date, Arc::clone(&pool) as Arc<dyn MemoryPool>).await;
        let run = summary.state.unwrap();
        assert_eq!(run.mode, "full");
        assert_eq!(run.fold, Some(how), "how the state {name} was folded");
        assert!(pool.refused.load(Ordering::SeqCst) > 0, "nothing refused");
    }
    let want = state_rows(&reference).await;
    for state in [&one, &limited, &untapped, &fallback, &messages, &handed] {
        let got = state_rows(state).await;
        for ((table, g), (_, w)) in got.iter().zip(&want) {
            assert!(
                !w.is_empty() || table == "counters",
                "{table}: the test has no rows"
            );
            assert_eq!(g, w, "state table {table} of {}", state.display());
        }
    }
    let counters = &manifest(&one)["counters"];
    for copies in ["folded_duplicate_events", "folded_duplicate_messages"] {
        assert!(
            counters[copies].as_u64().unwrap() > 0,
            "{copies}: copies were folded: {counters}"
        );
    }
}
