//! Hostile input and faults, one test per case, each named after what it
//! tries (docs/RELIABILITY.md lists them with what happens): absurd
//! arguments, data a writer got wrong, interrupts mid-run, statements that
//! would write into the inputs, and results that must come out the same
//! bytes every time.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use supportfunnel::report::{run_report, ReportOptions};
use supportfunnel::{build_context, EngineOptions};

use crate::common::{
    bin, ev, events_batch, run, sample, stderr, with_column, with_ts, write_one_message,
    write_parquet, Row, Via,
};

/// Fails unless `o` failed with one `error:` line and no panic.
fn assert_one_line_error(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "{what}: should fail");
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{what}: {err}");
    err
}

/// Names of the entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gen_rejects_absurd_arguments_with_one_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    let out = out.to_str().unwrap();
    for (args, says) in [
        (vec!["--start", "1800-01-01"], "--start"),
        (vec!["--start", "9999-12-30", "--days", "5"], "--start"),
        (vec!["--users", "18446744073709551615"], "--users"),
        (vec!["--users", "1000000000000"], "--users"),
        (vec!["--users", "0"], "--users"),
        (vec!["--days", "0"], "--days"),
        (vec!["--days", "100000"], "--days"),
    ] {
        let mut all = vec!["gen", "--out", out];
        all.extend(&args);
        let o = run(&all);
        let err = assert_one_line_error(&o, &args.join(" "));
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A six-digit year is refused when the flag is read, as a bad date is
    // (a usage error, exit 2).
    let o = run(&["gen", "--out", out, "--start", "+262142-12-30"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("the year must be between 1 and 9999"));
    assert!(!stderr(&o).contains("panicked"));
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn gen_of_zero_rows_writes_empty_tables_that_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    let o = run(&[
        "gen",
        "--out",
        out.to_str().unwrap(),
        "--users",
        "1",
        "--days",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "report",
        "--events",
        out.join("events").to_str().unwrap(),
        "--messages",
        out.join("messages").to_str().unwrap(),
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = String::from_utf8_lossy(&o.stdout);
    assert!(csv.contains("data_quality,rows_read,events,"), "{csv}");
    // without dates: no valid event to place the period, said in one line
    let o = run(&[
        "report",
        "--events",
        out.join("events").to_str().unwrap(),
        "--messages",
        out.join("messages").to_str().unwrap(),
    ]);
    assert!(assert_one_line_error(&o, "empty default period").contains("--from"));
}

/// A copy of the sample under `dir` (tests that try to write into their
/// inputs must not be able to change the real one): (events, messages).
fn copy_sample(dir: &Path) -> (String, String) {
    for table in ["events", "messages"] {
        for entry in walk(Path::new(&sample(table))) {
            let rel = entry.strip_prefix(sample(table)).unwrap();
            let to = dir.join(table).join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &to).unwrap();
        }
    }
    let at = |t: &str| dir.join(t).to_string_lossy().into_owned();
    (at("events"), at("messages"))
}

/// The sample's events plus one valid event in 2200.
fn sample_with_future_event(dir: &Path) -> (String, String) {
    let (_, messages) = copy_sample(dir);
    let events = dir.join("events");
    let future = [ev(
        "future-1",
        "u-future",
        "2200-06-01 12:00:00",
        "article_view",
    )];
    write_parquet(
        &events.join("date=2200-06-01/part-0.parquet"),
        &events_batch(&future),
    );
    (events.to_string_lossy().into_owned(), messages)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn one_future_event_does_not_move_the_default_period() {
    let dir = tempfile::tempdir().unwrap();
    let (events, messages) = sample_with_future_event(dir.path());
    let plain = build_context(&crate::common::sample_options())
        .await
        .unwrap();
    let engine = build_context(&EngineOptions::new(events, messages).unwrap())
        .await
        .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap();
    for via in Via::ALL {
        let (plain, engine) = (via.engine(&plain), via.engine(&engine));
        let path = via;
        let opts = ReportOptions {
            now: Some(now),
            ..ReportOptions::default()
        };
        let expected = run_report(&plain, &opts).await.unwrap();
        let report = run_report(&engine, &opts).await.unwrap();
        assert_eq!(report.periods, expected.periods, "{path:?}");
        let anchor = report.anchor.expect("default period");
        assert_eq!(anchor.future_events, 1, "{path:?}");
        assert_eq!(anchor.latest, expected.anchor.unwrap().latest, "{path:?}");
        assert_eq!(expected.anchor.unwrap().future_events, 0);
        // A clock past the event: it is an ordinary event again.
        let later = ReportOptions {
            now: Some(Utc.with_ymd_and_hms(2300, 1, 1, 0, 0, 0).unwrap()),
            ..ReportOptions::default()
        };
        let report = run_report(&engine, &later).await.unwrap();
        assert_eq!(
            report.periods.to,
            NaiveDate::from_ymd_opt(2200, 6, 1).unwrap()
        );
        assert_eq!(report.anchor.unwrap().future_events, 0);
    }
}

#[test]
fn the_cli_warns_about_future_events_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (events, messages) = sample_with_future_event(dir.path());
    let plain = run(&["report", "--format", "csv"]);
    let o = run(&[
        "report",
        "--events",
        &events,
        "--messages",
        &messages,
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: 1 valid event is dated after now"),
        "{}",
        stderr(&o)
    );
    // Same period as without the event (every row carries the period).
    let first = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(first(&o), first(&plain));
}

/// A day of ns-unit events next to a file holding one millisecond timestamp
/// in year 2500 (beyond what nanoseconds hold).
fn mixed_units(dir: &Path) -> (String, String) {
    let rows: Vec<Row> = vec![
        ev("a", "u1", "2026-03-02 09:00:00", "help_center_visit"),
        ev("b", "u1", "2026-03-02 09:00:01", "article_view"),
        ev("c", "u2", "2026-03-02 10:00:00", "article_search"),
    ];
    write_parquet(
        &dir.join("events/a.parquet"),
        &in_nanoseconds(&events_batch(&rows)),
    );
    let far = events_batch(&[ev("z", "u3", "2026-03-02 11:00:00", "article_view")]);
    let y2500 = Utc.with_ymd_and_hms(2500, 1, 1, 0, 0, 0).unwrap();
    let ms = TimestampMillisecondArray::from(vec![y2500.timestamp_millis()]).with_timezone("UTC");
    write_parquet(&dir.join("events/b.parquet"), &with_ts(&far, Arc::new(ms)));
    write_one_message(&dir.join("messages/m.parquet"));
    (
        dir.join("events").to_string_lossy().into_owned(),
        dir.join("messages").to_string_lossy().into_owned(),
    )
}

/// The events batch with `ts` in nanoseconds.
fn in_nanoseconds(batch: &RecordBatch) -> RecordBatch {
    let ns = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    with_ts(batch, cast(batch.column(2), &ns).unwrap())
}

#[tokio::test]
async fn a_year_2500_millisecond_row_next_to_nanosecond_files_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (events, messages) = mixed_units(dir.path());
    let engine = build_context(&EngineOptions::new(events, messages).unwrap())
        .await
        .unwrap();
    let got = crate::common::rows(
        &engine.ctx,
        "SELECT count(*), max(ts), arrow_typeof(max(ts)) FROM events",
    )
    .await;
    assert_eq!(
        got,
        vec!["4|2500-01-01T00:00:00Z|Timestamp(µs, \"UTC\")".to_string()]
    );
    let mut rows = Vec::new();
    for via in Via::ALL {
        let path = via;
        let opts = ReportOptions {
            now: Some(Utc.with_ymd_and_hms(2026, 12, 3, 0, 0, 0).unwrap()),
            ..ReportOptions::default()
        };
        let report = run_report(&via.engine(&engine), &opts).await.unwrap();
        assert_eq!(report.anchor.unwrap().future_events, 1, "{path:?}");
        rows.push(supportfunnel::report::rows_of(&report.batch));
    }
    assert_eq!(rows[0], rows[1]);
    assert_eq!(rows[0], rows[2]);
}

#[test]
fn a_period_beyond_nanosecond_timestamps_names_the_dates_given() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Row> = vec![ev("a", "u1", "2026-03-02 09:00:00", "help_center_visit")];
    write_parquet(
        &dir.path().join("events/a.parquet"),
        &in_nanoseconds(&events_batch(&rows)),
    );
    write_one_message(&dir.path().join("messages/m.parquet"));
    let events = dir.path().join("events");
    let messages = dir.path().join("messages");
    let o = run(&[
        "report",
        "--events",
        events.to_str().unwrap(),
        "--messages",
        messages.to_str().unwrap(),
        "--from",
        "1700-01-01",
        "--to",
        "1800-01-01",
    ]);
    let err = assert_one_line_error(&o, "period before 1677");
    assert!(
        err.contains("1700-01-01..1800-01-01") && err.contains("nanoseconds"),
        "{err}"
    );
}

// ---- interrupts -----------------------------------------------------------

/// Waits until `ready` holds (polling), then sends `signal` to `child`, and
/// returns its exit code and stderr. Panics if the child ended first: the
/// test would prove nothing.
fn interrupt_when(
    mut child: Child,
    signal: i32,
    ready: impl Fn() -> bool,
) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the command ended ({status}) before it could be interrupted: {err}");
        }
        assert!(Instant::now() < deadline, "never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) with the pid of our own child and a valid signal.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

const SIGINT: i32 = libc::SIGINT;
const SIGTERM: i32 = libc::SIGTERM;

fn spawn(args: &[&str]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_interrupted(code: Option<i32>, err: &str, signal: i32) {
    let (name, expected) = if signal == SIGINT {
        ("SIGINT", 130)
    } else {
        ("SIGTERM", 143)
    };
    assert_eq!(code, Some(expected), "{err}");
    assert!(
        err.contains(&format!(
            "interrupted by {name}: stopped, temporary files removed"
        )),
        "{err}"
    );
}

#[test]
fn sigint_during_gen_leaves_no_temporary_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big");
    let child = spawn(&[
        "gen",
        "--out",
        out.to_str().unwrap(),
        "--users",
        "2000000",
        "--days",
        "365",
    ]);
    let (code, err) = interrupt_when(child, SIGINT, || {
        entries(dir.path())
            .iter()
            .any(|e| e.starts_with(".big.tmp-"))
    });
    assert_interrupted(code, &err, SIGINT);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

fn walk_if_exists(p: &Path) -> usize {
    if p.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| 1 + walk_if_exists(&e.path())).sum())
            .unwrap_or(0)
    } else {
        0
    }
}

#[test]
fn sigterm_during_the_report_removes_its_intermediate_tables() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join("tmp");
    // under a memory limit the report's tables are written to disk
    let child = spawn(&[
        "report",
        "--memory-limit",
        "1GiB",
        "--temp-dir",
        temp.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    let (code, err) = interrupt_when(child, SIGTERM, || {
        entries(&temp)
            .iter()
            .any(|e| e.starts_with("supportfunnel-report-") && walk_if_exists(&temp.join(e)) > 0)
    });
    assert_interrupted(code, &err, SIGTERM);
    assert!(entries(&temp).is_empty(), "{:?}", entries(&temp));
}

#[test]
fn sigint_during_a_spilling_sql_output_leaves_no_spill_files_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join("tmp");
    let out = dir.path().join("out.parquet");
    let child = spawn(&[
        "sql",
        "--memory-limit",
        "64MiB",
        "--temp-dir",
        temp.to_str().unwrap(),
        "--format",
        "parquet",
        "--output",
        out.to_str().unwrap(),
        "SELECT value, random() AS r FROM range(200000000) ORDER BY r",
    ]);
    let (code, err) = interrupt_when(child, SIGINT, || {
        // a spill file exists: <temp>/supportfunnel-spill-*/datafusion-*/…
        entries(&temp)
            .iter()
            .any(|e| walk_if_exists(&temp.join(e)) >= 2)
    });
    assert_interrupted(code, &err, SIGINT);
    assert!(entries(&temp).is_empty(), "{:?}", entries(&temp));
    assert!(
        entries(dir.path()).iter().all(|e| e == "tmp"),
        "{:?}",
        entries(dir.path())
    );
}

#[test]
fn sigterm_during_run_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join("tmp");
    let out = dir.path().join("out");
    let mut config = format!(
        "[engine]\ntemp_dir = \"{}\"\n[output]\nlocation = \"{}\"\n",
        temp.display(),
        out.display()
    );
    // Enough reports that the job is still running when the signal comes.
    for i in 0..200 {
        config.push_str(&format!(
            "[[reports]]\nname = \"r{i}\"\nperiod = \"trailing_28d\"\n"
        ));
    }
    let cfg = dir.path().join("job.toml");
    std::fs::write(&cfg, config).unwrap();
    let child = spawn(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--date",
        "2026-03-01",
    ]);
    let (code, err) = interrupt_when(child, SIGTERM, || entries(&out).len() >= 2);
    assert_interrupted(code, &err, SIGTERM);
    assert!(entries(&temp).is_empty(), "{:?}", entries(&temp));
    // every result is whole: no temporary object among them
    for f in walk(&out) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, "data.parquet", "{}", f.display());
    }
}

// ---- the inputs are read-only ---------------------------------------------

#[test]
fn insert_into_a_contract_table_or_a_view_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (events, messages) = copy_sample(dir.path());
    let before = walk(Path::new(&events)).len();
    for (sql, says) in [
        (
            "INSERT INTO events (event_id) VALUES ('x')",
            "table `events` is read-only",
        ),
        (
            "INSERT INTO messages (message_id) VALUES ('x')",
            "table `messages` is read-only",
        ),
        ("DELETE FROM events", "table `events` is read-only"),
        (
            "INSERT INTO sessions (user_id) VALUES ('x')",
            "`sessions` is a view of the report and read-only",
        ),
    ] {
        let o = run(&["sql", "--events", &events, "--messages", &messages, sql]);
        let err = assert_one_line_error(&o, sql);
        assert!(err.contains(says), "{sql}: {err}");
    }
    assert_eq!(walk(Path::new(&events)).len(), before);
}

#[test]
fn writing_results_among_the_inputs_is_refused_elsewhere_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (events, messages) = copy_sample(&dir.path().join("lake"));
    let tables = ["--events", &events, "--messages", &messages];
    let run = |args: &[&str]| {
        let mut all = vec![args[0]];
        all.extend(tables);
        all.extend(&args[1..]);
        run(&all)
    };
    let before = walk(Path::new(&events)).len();
    let inside = format!("{events}/date=2026-03-01/x.parquet");
    let o = run(&["sql", &format!("COPY (SELECT 1 AS a) TO '{inside}'")]);
    assert!(assert_one_line_error(&o, "copy into events").contains("table `events` is read from"));
    // an external table over the events directory cannot be written either
    let o = run(&[
        "sql",
        &format!(
            "CREATE EXTERNAL TABLE e2 STORED AS PARQUET LOCATION '{events}/'; \
             INSERT INTO e2 SELECT * FROM e2 LIMIT 1"
        ),
    ]);
    assert!(assert_one_line_error(&o, "insert via alias").contains("refusing to write"));
    let o = run(&["sql", "--output", &inside, "SELECT 1 AS a"]);
    assert!(assert_one_line_error(&o, "--output into events").contains("refusing to write"));
    // temporary files do not go among the inputs either
    let spill_inside = format!("{events}/tmp");
    let o = run(&["report", "--temp-dir", &spill_inside]);
    assert!(assert_one_line_error(&o, "--temp-dir in events").contains("--temp-dir: refusing"));
    let o = run(&["report", "--format", "csv", "--output", &inside]);
    assert!(assert_one_line_error(&o, "report into events").contains("refusing to write"));
    assert_eq!(walk(Path::new(&events)).len(), before);
    // elsewhere is fine
    let out = dir.path().join("copy.parquet");
    let o = run(&[
        "sql",
        &format!("COPY (SELECT 1 AS a) TO '{}'", out.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.is_file());
}

#[test]
fn a_job_writing_into_its_inputs_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    let messages = dir.path().join("messages");
    write_parquet(
        &events.join("a.parquet"),
        &events_batch(&[ev("a", "u1", "2026-02-02 09:00:00", "article_view")]),
    );
    write_one_message(&messages.join("m.parquet"));
    let cfg = dir.path().join("job.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[tables]]\nname = \"events\"\nuri = \"{}\"\n[[tables]]\nname = \"messages\"\nuri = \"{}\"\n\
             [output]\nlocation = \"{}\"\n[[reports]]\nname = \"daily\"\nperiod = \"daily\"\n",
            events.display(),
            messages.display(),
            events.join("reports").display()
        ),
    )
    .unwrap();
    let o = run(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--date",
        "2026-03-01",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refusing to write"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("--output"), "{}", stderr(&o));
    assert_eq!(entries(&events), vec!["a.parquet".to_string()]);
}

// ---- messages -------------------------------------------------------------

#[test]
fn out_of_memory_names_our_flag_not_datafusions_setting() {
    let o = run(&["report", "--memory-limit", "4MiB", "--format", "csv"]);
    let err = assert_one_line_error(&o, "tiny memory limit");
    assert!(err.contains("--memory-limit"), "{err}");
    assert!(!err.contains("datafusion."), "{err}");
    // the limit it names works
    let named = err
        .split("a limit of ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no working limit named: {err}"));
    let o = run(&["report", "--memory-limit", named, "--format", "csv"]);
    assert!(o.status.success(), "{named}: {}", stderr(&o));
}

#[test]
fn a_failed_statement_piped_to_the_prompt_exits_non_zero() {
    let mut child = bin()
        .arg("sql")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"SELECT 1;\nSELECT nope FROM nowhere;\nSELECT 2;\n")
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 of 3 statements read from standard input failed"),
        "{}",
        stderr(&o)
    );
    // all statements still ran
    assert!(String::from_utf8_lossy(&o.stdout).contains('2'));
}

// ---- stable bytes -----------------------------------------------------------

#[test]
fn a_rerun_of_the_job_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("job.toml");
    let out = dir.path().join("out");
    std::fs::write(
        &cfg,
        format!(
            "[output]\nlocation = \"{0}/report\"\nsessions_location = \"{0}/sessions\"\n\
             [[reports]]\nname = \"monthly\"\nperiod = \"trailing_28d\"\nsessions = true\n",
            out.display()
        ),
    )
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let o = run(&[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--date",
            "2026-03-01",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut files = walk(&out);
        files.sort();
        seen.push(
            files
                .iter()
                .map(|f| (f.clone(), std::fs::read(f).unwrap()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(seen[0].len(), 2);
    assert!(seen[0] == seen[1], "a re-run wrote different bytes");
}

// ---- S3 faults ----------------------------------------------------------------

mod s3_faults {
    use std::time::{Duration, Instant};

    use chrono::NaiveDate;
    use supportfunnel::engine::context::context_without_tables;
    use supportfunnel::render::output::put_atomically;
    use supportfunnel::report::{rows_of, run_report, ReportOptions};
    use supportfunnel::settings::config::S3Config;
    use supportfunnel::settings::location::Location;
    use supportfunnel::{build_context, EngineOptions};

    use crate::s3_server::{Fault, Rule, S3Server, SECRET_KEY};

    fn report_opts() -> ReportOptions {
        ReportOptions {
            from: NaiveDate::from_ymd_opt(2026, 2, 1),
            to: NaiveDate::from_ymd_opt(2026, 3, 1),
            ..ReportOptions::default()
        }
    }

    async fn with_sample(buckets: &[&str]) -> S3Server {
        let server = S3Server::start(buckets);
        crate::s3::sample_on_s3(&server).await;
        server
    }

    fn on_s3(s3: S3Config) -> EngineOptions {
        crate::s3::options(
            "s3://lake/support/events/",
            "s3://lake/support/messages/",
            s3,
        )
    }

    async fn local_rows() -> Vec<supportfunnel::report::Row> {
        let engine = build_context(&crate::common::sample_options())
            .await
            .unwrap();
        rows_of(&run_report(&engine, &report_opts()).await.unwrap().batch)
    }

    fn rule(method: &'static str, path: &str, fault: Fault, times: usize) -> Rule {
        Rule {
            method,
            path_contains: path.to_string(),
            fault,
            times,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_slowdown_and_bodies_cut_mid_get_are_retried_and_the_report_is_the_same() {
        let server = with_sample(&["lake"]).await;
        server.faults.add(rule("GET", "/lake", Fault::SlowDown, 6));
        server
            .faults
            .add(rule("GET", "/lake/support/events/", Fault::CutBody, 3));
        server
            .faults
            .add(rule("GET", "/lake/support/messages/", Fault::CutBody, 2));
        let engine = build_context(&on_s3(server.settings(SECRET_KEY)))
            .await
            .unwrap();
        let report = run_report(&engine, &report_opts()).await.unwrap();
        assert_eq!(server.faults.injected(), 11);
        assert_eq!(rows_of(&report.batch), local_rows().await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_responses_late_past_the_timeout_are_retried_then_succeed() {
        let server = with_sample(&["lake"]).await;
        let mut s3 = server.settings(SECRET_KEY);
        s3.timeout = Some("1s".into());
        server.faults.add(rule(
            "GET",
            "/lake",
            Fault::Delay(Duration::from_secs(3)),
            2,
        ));
        let engine = build_context(&on_s3(s3)).await.unwrap();
        let report = run_report(&engine, &report_opts()).await.unwrap();
        assert_eq!(server.faults.injected(), 2);
        assert_eq!(rows_of(&report.batch), local_rows().await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_a_server_that_never_answers_in_time_fails_in_bounded_time_with_one_line() {
        let server = with_sample(&["lake"]).await;
        let mut s3 = server.settings(SECRET_KEY);
        s3.timeout = Some("1s".into());
        s3.max_retries = Some(2);
        s3.retry_timeout = Some("10s".into());
        server.faults.add(rule(
            "GET",
            "/lake",
            Fault::Delay(Duration::from_secs(30)),
            1000,
        ));
        let started = Instant::now();
        let err = match build_context(&on_s3(s3)).await {
            Ok(_) => panic!("a server that never answers cannot be read"),
            Err(e) => e.to_string(),
        };
        let took = started.elapsed();
        // 3 tries of 1 s plus backoff, far from the 30 s the server sleeps
        assert!(took < Duration::from_secs(15), "took {took:?}");
        assert!(!err.contains('\n'), "{err}");
        assert!(
            err.contains("table `events`") && err.contains("s3://lake/support/events/"),
            "{err}"
        );
        assert!(!err.contains(SECRET_KEY));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_a_put_cut_half_way_is_retried_or_leaves_the_previous_object() {
        let server = S3Server::start(&["out"]);
        let mut s3 = server.settings(SECRET_KEY);
        let location = "s3://out/report/data.parquet";
        let out = Location::parse(location).unwrap();
        let ctx = |s3: S3Config| {
            context_without_tables(&EngineOptions {
                s3,
                ..EngineOptions::default()
            })
            .unwrap()
        };
        let v1 = vec![1u8; 300_000];
        put_atomically(&ctx(s3.clone()), &out, v1.clone())
            .await
            .unwrap();
        // one cut upload: retried, the new object is whole
        server.faults.add(rule("PUT", "/out/", Fault::CutUpload, 1));
        let v2 = vec![2u8; 300_000];
        put_atomically(&ctx(s3.clone()), &out, v2.clone())
            .await
            .unwrap();
        assert_eq!(server.faults.injected(), 1);
        assert!(crate::s3::get(&server, "report/data.parquet").await == v2);
        // every upload cut: the write fails, the previous object stays
        server
            .faults
            .add(rule("PUT", "/out/", Fault::CutUpload, 1000));
        s3.max_retries = Some(1);
        let err = put_atomically(&ctx(s3.clone()), &out, vec![3u8; 300_000])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(location), "{err}");
        server.faults.clear();
        assert!(crate::s3::get(&server, "report/data.parquet").await == v2);
    }
}

// ---- corrupted pages ----------------------------------------------------------

/// A corrupted data page is refused when the file carries page checksums
/// (the fixture was written by pyarrow with `write_page_checksum=True`,
/// uncompressed, so a flipped byte changes a value and nothing else).
#[tokio::test]
async fn a_corrupted_page_with_a_checksum_is_an_error_not_garbage() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let fixture: &[u8] = include_bytes!("../fixtures/events_with_page_checksums.parquet");
    let reader = SerializedFileReader::new(bytes::Bytes::from_static(fixture)).unwrap();
    let ts = reader.metadata().row_group(0).column(2);
    assert_eq!(ts.column_path().string(), "ts");
    // a byte among the last values of the ts page
    let at = (ts.data_page_offset() + ts.compressed_size() - 20) as usize;

    let query = "SELECT count(*), min(ts), max(ts) FROM events";
    let intact = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(intact.path().join("events")).unwrap();
    std::fs::write(intact.path().join("events/a.parquet"), fixture).unwrap();
    write_one_message(&intact.path().join("messages/m.parquet"));
    let engine = build_context(
        &EngineOptions::new(
            intact.path().join("events").to_string_lossy(),
            intact.path().join("messages").to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        crate::common::rows(&engine.ctx, query).await,
        vec!["200|2026-03-02T00:00:00Z|2026-03-02T02:02:43Z".to_string()]
    );

    let corrupt = tempfile::tempdir().unwrap();
    let mut bytes = fixture.to_vec();
    bytes[at] ^= 0x5A;
    std::fs::create_dir_all(corrupt.path().join("events")).unwrap();
    std::fs::write(corrupt.path().join("events/a.parquet"), &bytes).unwrap();
    write_one_message(&corrupt.path().join("messages/m.parquet"));
    let engine = build_context(
        &EngineOptions::new(
            corrupt.path().join("events").to_string_lossy(),
            corrupt.path().join("messages").to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let err = match engine.ctx.sql(query).await.unwrap().collect().await {
        Ok(b) => panic!("a corrupted page was read: {:?}", crate::common::render(&b)),
        Err(e) => e.to_string(),
    };
    assert!(
        err.to_lowercase().contains("crc checksum mismatch"),
        "{err}"
    );
}

// ---- skew and size ------------------------------------------------------------

#[test]
fn one_user_with_a_million_actions_among_ordinary_ones() {
    let dir = tempfile::tempdir().unwrap();
    // The whale: an article view every 10 s for 10,000,000 s. Sessions last
    // exactly 24 h from their first action, and an action falls on every
    // 86,400 s boundary: ceil(10,000,000 / 86,400) = 116 sessions.
    const N: i64 = 1_000_000;
    let t0 = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    let ids: Vec<String> = (0..N).map(|i| format!("w{i}")).collect();
    let mut rows: Vec<(String, String, i64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), "whale".to_string(), t0 + i as i64 * 10_000_000))
        .collect();
    // 2,000 ordinary users with one visit each
    for u in 0..2_000i64 {
        rows.push((format!("o{u}"), format!("user{u}"), t0 + u * 1_000_000));
    }
    let n = rows.len();
    let schema = events_batch(&[]).schema();
    let text = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let none = || text(vec![None; n]);
    let batch = RecordBatch::try_new(
        schema,
        vec![
            text(rows.iter().map(|r| Some(r.0.clone())).collect()),
            text(rows.iter().map(|r| Some(r.1.clone())).collect()),
            Arc::new(
                datafusion::arrow::array::TimestampMicrosecondArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            text(vec![Some("article_view".to_string()); n]),
            text(vec![Some("help_center".to_string()); n]),
            none(),
            none(),
            none(),
            Arc::new(datafusion::arrow::array::Int32Array::from(vec![
                None::<i32>;
                n
            ])),
        ],
    )
    .unwrap();
    // Row groups of 64Ki rows, as event pipelines write them.
    let props = datafusion::parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(65_536))
        .build();
    std::fs::create_dir_all(dir.path().join("events")).unwrap();
    let file = std::fs::File::create(dir.path().join("events/a.parquet")).unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))
        .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    write_one_message(&dir.path().join("messages/m.parquet"));
    let events = dir.path().join("events");
    let messages = dir.path().join("messages");
    let tables = [
        "--events",
        events.to_str().unwrap(),
        "--messages",
        messages.to_str().unwrap(),
    ];
    let mut args = vec!["sql", "--format", "csv"];
    args.extend(tables);
    args.push(
        "SELECT user_id = 'whale' AS whale, count(*) AS sessions, sum(actions) AS actions \
         FROM sessions GROUP BY 1 ORDER BY 1",
    );
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "whale,sessions,actions\nfalse,2000,2000\ntrue,116,1000000\n"
    );
    // The report under a 256 MiB limit stays within 1.25 × 256 + 100 MiB.
    let mut args = vec![
        "report",
        "-v",
        "--memory-limit",
        "256MiB",
        "--from",
        "2026-01-01",
        "--to",
        "2026-05-01",
        "--format",
        "csv",
    ];
    args.extend(tables);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let peak: u64 = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("peak memory: ")?
                .strip_suffix(" MiB")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no peak memory line: {err}"));
    eprintln!("whale report: peak memory {peak} MiB");
    assert!(peak <= 320 + 100, "peak memory {peak} MiB");
}

/// Rows `a`..: one session each, for the size cases below.
fn visits(n: usize) -> Vec<Row> {
    let ids: Vec<&'static str> = (0..n)
        .map(|i| &*Box::leak(format!("v{i}").into_boxed_str()))
        .collect();
    ids.into_iter()
        .map(|id| ev(id, id, "2026-03-02 09:00:00", "help_center_visit"))
        .collect()
}

/// The report over `events` (and one message) in CSV, or the error.
fn report_csv(events: &Path, messages: &Path) -> String {
    let o = run(&[
        "report",
        "--events",
        events.to_str().unwrap(),
        "--messages",
        messages.to_str().unwrap(),
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-08",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn an_empty_file_and_row_groups_of_one_row_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rows = visits(50);
    write_parquet(&dir.path().join("plain/a.parquet"), &events_batch(&rows));
    write_one_message(&dir.path().join("messages/m.parquet"));
    let messages = dir.path().join("messages");
    let expected = report_csv(&dir.path().join("plain"), &messages);
    assert!(
        expected
            .contains("sessions,sessions_total,,2026-03-01T00:00:00Z,2026-03-08T00:00:00Z,50.0"),
        "{expected}"
    );

    // the same rows, one row per row group, next to a file of 0 rows
    let odd = dir.path().join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    let props = datafusion::parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(1))
        .build();
    let batch = events_batch(&rows);
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(odd.join("a.parquet")).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    write_parquet(&odd.join("empty.parquet"), &events_batch(&[]));
    assert_eq!(report_csv(&odd, &messages), expected);
}

#[test]
fn ten_thousand_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let rows = visits(10_000);
    let events = dir.path().join("events");
    for (i, r) in rows.chunks(1).enumerate() {
        write_parquet(
            &events.join(format!("date=2026-03-02/part-{i:05}.parquet")),
            &events_batch(r),
        );
    }
    write_one_message(&dir.path().join("messages/m.parquet"));
    let csv = report_csv(&events, &dir.path().join("messages"));
    assert!(
        csv.contains("sessions,sessions_total,,2026-03-01T00:00:00Z,2026-03-08T00:00:00Z,10000.0"),
        "{csv}"
    );
    assert!(
        csv.contains(
            "data_quality,rows_read,events,2026-03-01T00:00:00Z,2026-03-08T00:00:00Z,10000.0"
        ),
        "{csv}"
    );
}

#[test]
fn ten_kilobyte_ids() {
    let dir = tempfile::tempdir().unwrap();
    let long = |c: char, i: usize| -> &'static str {
        Box::leak(format!("{}{i}", c.to_string().repeat(10_000)).into_boxed_str())
    };
    let mut rows = Vec::new();
    for u in 0..3 {
        let user = long('u', u);
        for k in 0..4 {
            let ts: &'static str = Box::leak(format!("2026-03-02 0{k}:00:00").into_boxed_str());
            rows.push(ev(long('e', u * 10 + k), user, ts, "article_view"));
        }
    }
    // a repeat of an event_id with a 10 KB id
    rows.push(rows[0].clone());
    write_parquet(&dir.path().join("events/a.parquet"), &events_batch(&rows));
    write_one_message(&dir.path().join("messages/m.parquet"));
    let csv = report_csv(&dir.path().join("events"), &dir.path().join("messages"));
    assert!(
        csv.contains("sessions,sessions_total,,2026-03-01T00:00:00Z,2026-03-08T00:00:00Z,3.0"),
        "{csv}"
    );
    assert!(
        csv.contains(
            "data_quality,duplicate_events,,2026-03-01T00:00:00Z,2026-03-08T00:00:00Z,1.0"
        ),
        "{csv}"
    );
}

#[test]
fn non_utf8_bytes_in_a_binary_id_column_are_a_clear_type_error() {
    let dir = tempfile::tempdir().unwrap();
    let user_ids = datafusion::arrow::array::BinaryArray::from(vec![
        Some(&[0xff, 0xfe, 0x00][..]),
        Some(&b"ok"[..]),
    ]);
    write_parquet(
        &dir.path().join("events/bad.parquet"),
        &with_column(&events_batch(&visits(2)), "user_id", Arc::new(user_ids)),
    );
    write_one_message(&dir.path().join("messages/m.parquet"));
    let o = run(&[
        "report",
        "--events",
        dir.path().join("events").to_str().unwrap(),
        "--messages",
        dir.path().join("messages").to_str().unwrap(),
    ]);
    let err = assert_one_line_error(&o, "binary user_id");
    assert!(
        err.contains("table `events`: column `user_id` has type Binary, expected a string")
            && err.contains("bad.parquet"),
        "{err}"
    );
}

#[test]
fn an_unusable_temp_dir_only_stops_what_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    // a directory cannot be made under a regular file, even by root
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("tmp");
    let with_tmpdir = |args: &[&str]| bin().env("TMPDIR", &bad).args(args).output().unwrap();
    // no spilling needed: works, spilling is off
    let o = with_tmpdir(&[
        "sql",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM sessions",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with_tmpdir(&["report", "--format", "csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // under a memory limit the report's tables go to disk: it needs a
    // working directory, and says so in one line naming the flag
    let o = with_tmpdir(&["report", "--memory-limit", "1GiB", "--format", "csv"]);
    let err = assert_one_line_error(&o, "report with an unusable TMPDIR");
    assert!(err.contains("--temp-dir"), "{err}");
    // a --temp-dir that cannot be used is an error even for a plain query
    let o = run(&["sql", "--temp-dir", bad.to_str().unwrap(), "SELECT 1"]);
    assert!(assert_one_line_error(&o, "bad --temp-dir").contains("--temp-dir"));
}

#[test]
fn absurd_engine_settings_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            vec!["report", "--target-partitions", "100000"],
            "--target-partitions 100000 is out of range",
        ),
        (
            vec!["report", "--target-partitions", "0"],
            "--target-partitions 0 is out of range",
        ),
        (
            vec!["sql", "--memory-limit", "0", "SELECT 1"],
            "--memory-limit",
        ),
    ] {
        let o = run(&args);
        let err = stderr(&o);
        assert!(
            !o.status.success() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[[tables]]\nname = \"events\"\nuri = \"\"\n").unwrap();
    let o = run(&["sql", "--config", cfg.to_str().unwrap(), "SELECT 1"]);
    assert!(assert_one_line_error(&o, "empty uri").contains("table `events` has an empty uri"));
}
