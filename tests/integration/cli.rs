//! The `supportfunnel` binary end to end: answers on the bundled sample, every
//! output format, and one clear line plus a non-zero exit for bad input, with
//! no partial output file left behind.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{bin, run, stderr, stdout};

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sample")
}

#[test]
fn sessions_by_status_on_the_sample() {
    let o = run(&[
        "sql",
        "--format",
        "csv",
        "SELECT status, count(*) AS n FROM sessions GROUP BY 1 ORDER BY 1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "status,n");
    let statuses: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec![
            "human_after_self_serve",
            "human_from_start",
            "self_serve_resolved",
            "stopped"
        ]
    );
    // The same count through the UDWF directly.
    let total: u64 = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    let o = run(&[
        "sql",
        "--format",
        "csv",
        "SELECT count(DISTINCT (user_id, s)) FROM (SELECT user_id, session_start(ts) OVER (PARTITION BY user_id ORDER BY ts) AS s \
         FROM clean_events WHERE event_type IN ('help_center_visit','article_search','article_view','conversation_started'))",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().nth(1).unwrap(), total.to_string());
}

#[test]
fn json_table_and_parquet_outputs() {
    let o = run(&[
        "sql",
        "--format",
        "json",
        "SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, NULL",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().any(|v| v["a"] == 1 && v["b"] == "x"));

    let o = run(&["sql", "SELECT count(*) AS n FROM messages"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("| n "), "{}", stdout(&o));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/result.parquet");
    let o = run(&[
        "sql",
        "--format",
        "parquet",
        "--output",
        out.to_str().unwrap(),
        "SELECT status, count(*) AS n FROM sessions GROUP BY 1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "sql",
        "--format",
        "csv",
        &format!("SELECT count(*) FROM '{}'", out.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().nth(1), Some("4"));

    // Parquet through a pipe (standard output not a terminal): written.
    let o = run(&["sql", "--format", "parquet", "SELECT 1 AS a"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.starts_with(b"PAR1") && o.stdout.ends_with(b"PAR1"));
}

#[test]
fn help_says_what_the_commands_do() {
    let help = |cmd: &str| stdout(&run(&[cmd, "--help"]));
    let run_help = help("run");
    assert!(
        run_help.contains("Delta Lake") && run_help.contains("[state]"),
        "{run_help}"
    );
    // one engine: no strategy to choose; the memory limit is honoured by
    // spilling
    let report = help("report");
    assert!(!report.contains("--strategy"), "{report}");
    assert!(
        report.contains("--memory-limit") && report.contains("spilling"),
        "{report}"
    );
}

#[test]
fn script_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("q.sql");
    std::fs::write(
        &f,
        "CREATE VIEW v AS SELECT 41 + 1 AS answer;\nSELECT answer FROM v;",
    )
    .unwrap();
    let o = run(&["sql", "--format", "csv", "-f", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("answer\n42"), "{}", stdout(&o));
}

fn assert_one_line_failure(o: &Output, needle: &str) {
    assert!(!o.status.success(), "should fail: {}", stdout(o));
    let err = stderr(o);
    assert!(err.contains(needle), "stderr lacks `{needle}`: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert_one_line_failure(
        &run(&["sql", "--events", missing.to_str().unwrap(), "SELECT 1"]),
        "does not exist",
    );
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    assert_one_line_failure(
        &run(&[
            "sql",
            "--messages",
            dir.path().join("empty").to_str().unwrap(),
            "SELECT 1",
        ]),
        "no Parquet files found",
    );
    let corrupt = dir.path().join("c.parquet");
    std::fs::write(&corrupt, b"PAR1 but not really").unwrap();
    assert_one_line_failure(
        &run(&["sql", "--events", corrupt.to_str().unwrap(), "SELECT 1"]),
        "cannot read Parquet file",
    );
    assert_one_line_failure(&run(&["sql", "SELECT nope FROM events"]), "nope");
    assert_one_line_failure(
        &run(&["sql", "--memory-limit", "lots", "SELECT 1"]),
        "--memory-limit",
    );
    let o = run(&["sql", "--format", "xml", "SELECT 1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown format `xml`"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "gen",
        "--out",
        dir.path().join("g").to_str().unwrap(),
        "--start",
        "2026-13-01",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a YYYY-MM-DD date"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn failed_query_leaves_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.csv");
    std::fs::write(&out, "previous result\n").unwrap();
    // fails at execution time, after planning succeeded
    let o = run(&[
        "sql",
        "--format",
        "csv",
        "--output",
        out.to_str().unwrap(),
        "SELECT arrow_cast('not a number', 'Int64') FROM sessions",
    ]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous result\n");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
}

#[test]
fn sample_is_small_and_present() {
    let s = sample();
    let total: usize = crate::common::files(&s).iter().map(|(_, b)| b.len()).sum();
    assert!(
        total > 0 && total < 5 * 1024 * 1024,
        "sample is {total} bytes"
    );
    assert!(Path::new(&s.join("events")).is_dir() && Path::new(&s.join("messages")).is_dir());
}

#[test]
fn report_prints_for_a_person_and_fails_cleanly() {
    let o = run(&["report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for section in [
        "funnel",
        "sessions",
        "proactive",
        "self_serve",
        "human",
        "data_quality",
    ] {
        assert!(
            out.lines().any(|l| l == section),
            "section {section} missing:\n{out}"
        );
    }
    assert!(
        out.contains('%') && (out.contains('▲') || out.contains('▼')),
        "{out}"
    );

    let o = run(&[
        "report",
        "--from",
        "2030-01-01",
        "--to",
        "2030-01-08",
        "--format",
        "csv",
    ]);
    assert!(
        o.status.success(),
        "a period with no data is not an error: {}",
        stderr(&o)
    );
    let csv = stdout(&o);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("sessions,sessions_total,,") && l.contains(",0.0,0.0,0.0,")),
        "{csv}"
    );

    assert_one_line_failure(
        &run(&["report", "--from", "2026-02-10", "--to", "2026-02-01"]),
        "must be before",
    );
    assert_one_line_failure(&run(&["report", "--tz", "Mars/Base"]), "unknown time zone");
    let o = run(&["report", "--from", "2026-02-30", "--to", "2026-03-01"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a YYYY-MM-DD date"),
        "{}",
        stderr(&o)
    );
    let o = run(&["report", "--from", "2026-02-01"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--to"), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let o = run(&[
        "report",
        "--format",
        "parquet",
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "it's \"quoted\"",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "sql",
        "--format",
        "csv",
        &format!(
            "SELECT count(*), count(DISTINCT section) FROM '{}'",
            out.display()
        ),
    ]);
    assert_eq!(stdout(&o).lines().nth(1), Some("52,6"), "{}", stderr(&o));
}

#[test]
fn interactive_prompt_takes_multi_line_statements() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = bin()
        .args(["sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(*)\n  AS n FROM sessions\n  WHERE status = 'stopped';\n\\d\nSELECT nope;\nSELECT 2 AS two;\n\\q\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    // the failed statement does not stop the others, but piped input with
    // a failure exits non-zero
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("| n "), "{out}");
    assert!(
        out.contains("session_actions"),
        "\\d lists the views: {out}"
    );
    assert!(
        out.contains("| two |"),
        "an error does not end the session: {out}"
    );
    assert!(stderr(&o).contains("error:"), "{}", stderr(&o));
}

#[test]
fn config_file_sets_tables_defaults_and_options_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("job.toml");
    let s = sample();
    std::fs::write(
        &cfg,
        format!(
            "[[tables]]\nname = \"events\"\nuri = \"{}\"\n\
             [[tables]]\nname = \"messages\"\nuri = \"{}\"\n\
             [[tables]]\nname = \"extra\"\nuri = \"{}\"\n\
             [defaults]\ntz = \"America/New_York\"\n\
             [datafusion]\n\"datafusion.execution.batch_size\" = 1024\n",
            s.join("events").display(),
            s.join("messages").display(),
            s.join("messages").display(),
        ),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let o = run(&[
        "sql",
        "--config",
        &cfg,
        "--format",
        "csv",
        "SELECT value FROM information_schema.df_settings \
         WHERE name = 'datafusion.execution.batch_size'; SELECT count(*) FROM extra",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "value\n1024\ncount(*)\n6059\n");
    let period = |extra: &[&str]| {
        let mut args = vec![
            "report",
            "--config",
            &cfg,
            "--from",
            "2026-02-01",
            "--to",
            "2026-02-02",
            "--format",
            "csv",
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .nth(3)
            .unwrap()
            .to_string()
    };
    assert_eq!(period(&[]), "2026-02-01T05:00:00Z", "the config's zone");
    assert_eq!(
        period(&["--tz", "UTC"]),
        "2026-02-01T00:00:00Z",
        "the flag wins"
    );

    // unknown keys and options are named
    std::fs::write(
        dir.path().join("bad.toml"),
        "[engine]\nmemory_limt = \"1GiB\"\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml").to_string_lossy().into_owned();
    let o = run(&["sql", "--config", &bad, "SELECT 1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("memory_limt"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        dir.path().join("bad2.toml"),
        "[datafusion]\n\"datafusion.execution.no_such_thing\" = 1\n",
    )
    .unwrap();
    let bad2 = dir.path().join("bad2.toml").to_string_lossy().into_owned();
    let o = run(&["sql", "--config", &bad2, "SELECT 1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("datafusion.execution.no_such_thing"),
        "{}",
        stderr(&o)
    );
    // run without a config is refused with a hint
    let o = run(&["run"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--config"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn partitions_and_spilling_give_byte_identical_reports() {
    let report = |extra: &[&str]| {
        let mut args = vec!["report", "--format", "json"];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        o.stdout
    };
    let want = report(&[]);
    assert!(want.len() > 1000);
    for extra in [
        &["--target-partitions", "1"][..],
        &["--target-partitions", "2"],
        &["--target-partitions", "8"],
        // bounded: more buckets, the report's tables on disk (the
        // operators' forced spilling is `Via::Spilled` in every report test)
        &["--memory-limit", "256MiB", "--target-partitions", "2"],
    ] {
        assert!(report(extra) == want, "{extra:?} gives another report");
    }
}
