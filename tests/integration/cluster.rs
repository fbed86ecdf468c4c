//! On a real Apache Ballista cluster: a scheduler and two executors started
//! by the test as child processes (our own binary's `scheduler` and
//! `executor` commands) on 127.0.0.1, free ports, tables on the loopback S3
//! server. The report, ad-hoc SQL and the scheduled job on the cluster give
//! what they give in one process; a killed executor's work is redone on the
//! other, and with none left the query fails in one line; bad cluster input
//! fails in one line, fast, writing nothing. Every process started is killed
//! when its handle is dropped, which a failing assertion's unwinding does
//! too (and the kernel does if the test process dies: PR_SET_PDEATHSIG).

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::ObjectStore;
use supportfunnel::io::storage::s3_builder;

use crate::common::{bin, free_port, stderr, stdout, Node};
use crate::s3::sample_on_s3;
use crate::s3_server::{S3Server, ACCESS_KEY, SECRET_KEY};

/// Seconds without heartbeat before the test scheduler drops an executor.
const EXECUTOR_TIMEOUT: u64 = 4;

/// A scheduler and executors, each a child process.
struct Cluster {
    url: String,
    scheduler: Node,
    executors: Vec<Node>,
    /// The executors' working directory: not the crate's, so a relative
    /// path only the client can resolve is one they cannot read.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A scheduler and `executors` executors of `tasks` task slots each.
    fn start(executors: usize, tasks: usize, env: &[(&str, &str)]) -> Self {
        Self::start_with(executors, tasks, &[], env)
    }

    /// [`Cluster::start`], each executor also given `args`.
    fn start_with(executors: usize, tasks: usize, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let timeout = EXECUTOR_TIMEOUT.to_string();
        let tasks = tasks.to_string();
        let (scheduler, addr) = start_scheduler(dir.path(), &["--executor-timeout", &timeout], env);
        let mut nodes = Vec::new();
        for i in 0..executors {
            let work = dir.path().join(format!("executor-{i}"));
            nodes.push(start_executor(
                &format!("executor-{i}"),
                dir.path(),
                &addr,
                &work,
                &[
                    &["--concurrent-tasks", &tasks, "--heartbeat-interval", "1"],
                    args,
                ]
                .concat(),
                env,
            ));
        }
        Self {
            url: format!("df://{addr}"),
            scheduler,
            executors: nodes,
            _dir: dir,
        }
    }

    /// Every log line of every node.
    fn logs(&self) -> String {
        let mut all = self.scheduler.log();
        for e in &self.executors {
            all.push_str(&e.log());
        }
        all
    }
}

/// A scheduler with `args`, and the address it listens on.
fn start_scheduler(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Node, String) {
    let mut all = vec!["scheduler", "--bind", "127.0.0.1:0"];
    all.extend(args);
    let mut scheduler = Node::start("scheduler", dir, &all, env);
    let line = scheduler.wait_for_line("scheduler listening on", Duration::from_secs(60));
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    (scheduler, addr)
}

/// An executor of the scheduler at `addr`, working in `work`, with `args`,
/// once it has registered.
///
/// Its two ports are only free when asked: a process outside the tests may
/// take one before the executor binds it. An executor that finds its port
/// taken is started again on others, up to three times. Ballista binds the
/// flight port only after registering, so an executor counts as started
/// once its flight port also answers and it still runs.
fn start_executor(
    name: &str,
    dir: &Path,
    addr: &str,
    work: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Node {
    let mut tries = 0;
    loop {
        tries += 1;
        let (flight, grpc) = (free_port().to_string(), free_port().to_string());
        let bind = format!("127.0.0.1:{flight}");
        let mut all = vec![
            "executor",
            "--scheduler",
            addr,
            "--bind",
            &bind,
            "--grpc-port",
            &grpc,
            "--work-dir",
            work.to_str().unwrap(),
        ];
        all.extend(args);
        let mut node = Node::start(name, dir, &all, env);
        node.work_dir = Some(work.to_path_buf());
        let started = node
            .try_wait_for_line("registration succeed", Duration::from_secs(60))
            .and_then(|_| node.try_wait_listening(&bind, Duration::from_secs(60)));
        match started {
            Ok(()) => return node,
            Err(log) if tries < 3 && log.contains("Address already in use") => continue,
            Err(log) => panic!("{log}"),
        }
    }
}

/// A config file reaching the test's S3 server (the client's only source
/// of credentials: executors get them from the client).
fn s3_config(dir: &Path, server: &S3Server, extra: &str) -> PathBuf {
    let path = dir.join("cluster.toml");
    std::fs::write(
        &path,
        format!(
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
{extra}
"#,
            endpoint = server.endpoint
        ),
    )
    .unwrap();
    path
}

/// Runs the binary with `--config config` and `args`, checking success.
fn ok(config: &Path, args: &[&str]) -> String {
    let out = run_with(config, args);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    stdout(&out)
}

fn run_with(config: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Every key under `s3://bucket/prefix`, with its bytes.
async fn objects(server: &S3Server, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let store = s3_builder(&server.settings(SECRET_KEY))
        .unwrap()
        .with_bucket_name(bucket)
        .build()
        .unwrap();
    let metas: Vec<_> = store
        .list(Some(&object_store::path::Path::from(prefix)))
        .try_collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for m in metas {
        use object_store::ObjectStoreExt;
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push((m.location.to_string(), bytes.to_vec()));
    }
    out.sort();
    out
}

/// The job's output and reports, writing under `s3://out/<prefix>/`.
fn job(prefix: &str) -> String {
    format!(
        r#"
[output]
location = "s3://out/{prefix}/report"
sessions_location = "s3://out/{prefix}/sessions"

[[reports]]
name = "daily"
period = "daily"
sessions = true

[[reports]]
name = "trailing"
period = "28d"
"#
    )
}

const SQL_CHECKS: &[&str] = &[
    // the window function directly
    "SELECT user_id, ts, session_start(ts) OVER (PARTITION BY user_id ORDER BY ts) AS s \
     FROM clean_events ORDER BY user_id, ts, s LIMIT 500",
    // the views
    "SELECT status, count(*) AS n, sum(actions) AS a, count(first_self_serve_at) AS s \
     FROM sessions GROUP BY status ORDER BY status",
    "SELECT count(*) AS n, count(DISTINCT user_id) AS users, min(started_at) AS first, \
     sum(bot_answers) AS b FROM conversations",
    // a join of both views, and our scalar function
    "SELECT s.status, count(DISTINCT c.conversation_id) AS conversations, \
     sum(id_hash(s.user_id) % 7) AS h \
     FROM sessions s JOIN conversations c \
     ON c.user_id = s.user_id AND c.session_start = s.session_start \
     GROUP BY s.status ORDER BY s.status",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_sql_and_job_on_a_cluster_equal_one_process() {
    let server = S3Server::start(&["lake", "out", "scratch"]);
    sample_on_s3(&server).await;
    let cluster = Cluster::start(2, 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(dir.path(), &server, &job("local"));
    let on = [
        "--cluster",
        cluster.url.as_str(),
        "--scratch",
        "s3://scratch/tmp",
    ];

    // The report, for a given period and for the default one. Each builds
    // the operators once, on one executor: the scheduler sends all of a
    // client's operator tasks to the executor that holds its build.
    let builds = || {
        cluster
            .executors
            .iter()
            .map(|e| e.log().matches("operators built").count())
            .sum::<usize>()
    };
    for period in [&["--from", "2026-02-01", "--to", "2026-03-01"][..], &[][..]] {
        let mut args = vec!["report", "--format", "json"];
        args.extend_from_slice(period);
        let local = ok(&config, &args);
        args.extend_from_slice(&on);
        let before = builds();
        let remote = ok(&config, &args);
        assert!(local.lines().count() > 40, "{local}");
        assert_eq!(local, remote, "report {period:?}");
        // (the executors' logs are read by threads of their own)
        let start = Instant::now();
        while builds() <= before && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            builds(),
            before + 1,
            "report {period:?}: {}",
            cluster.logs()
        );
    }

    // Ad-hoc SQL: the window function, views, a join.
    for sql in SQL_CHECKS {
        let local = ok(&config, &["sql", "--format", "csv", sql]);
        let remote = ok(&config, &["sql", "--format", "csv", sql, on[0], on[1]]);
        assert!(local.lines().count() > 1, "{sql}: {local}");
        assert_eq!(local, remote, "{sql}");
    }

    // The relations are the operators, planned by the scheduler as one
    // task over every file (docs/CLUSTER.md).
    let plan = ok(
        &config,
        &[
            "sql",
            "--format",
            "csv",
            "EXPLAIN SELECT count(*) FROM sessions",
            on[0],
            on[1],
        ],
    );
    assert!(
        plan.contains("NativeExec: relation=sessions") && plan.contains("one task over"),
        "{plan}"
    );

    // The scheduled job: the same objects with the same rows.
    ok(&config, &["run", "--date", "2026-02-20"]);
    let cluster_config = s3_config(
        dir.path(),
        &server,
        &format!(
            "[engine]\ncluster = \"{}\"\nscratch = \"s3://scratch/tmp\"\n{}",
            cluster.url,
            job("cluster")
        ),
    );
    // (the same file name: the local run's config was read already)
    ok(&cluster_config, &["run", "--date", "2026-02-20"]);
    let local = objects(&server, "out", "local").await;
    let remote = objects(&server, "out", "cluster").await;
    assert_eq!(
        local.len(),
        3,
        "{:?}",
        local.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    for ((a, x), (b, y)) in local.iter().zip(&remote) {
        assert_eq!(a.replacen("local/", "", 1), b.replacen("cluster/", "", 1));
        assert_eq!(parquet_rows(x), parquet_rows(y), "{a} and {b} differ");
    }

    // The report's intermediate tables are gone; no secret in any log.
    assert!(objects(&server, "scratch", "").await.is_empty());
    let logs = cluster.logs();
    assert!(logs.contains("Execute task"), "{logs}");
    assert!(!logs.contains(SECRET_KEY), "secret in the logs");
}

/// A Parquet object's schema and rows, as text.
fn parquet_rows(bytes: &[u8]) -> Vec<String> {
    let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
        bytes::Bytes::copy_from_slice(bytes),
        8192,
    )
    .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let mut rows = crate::common::render(&batches);
    if let Some(b) = batches.first() {
        let columns: Vec<String> = b
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        rows.insert(0, columns.join(", "));
    }
    rows
}

/// Runs `args` in the background; the handle's output is read by `finish`.
fn spawn(config: &Path, args: &[&str]) -> Child {
    bin()
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The jobs (top-level directories) an executor's shuffle directory holds.
fn jobs(executor: &Node) -> Vec<PathBuf> {
    let shuffle = executor.work_dir.as_ref().unwrap().join("shuffle");
    let Ok(entries) = std::fs::read_dir(shuffle) else {
        return vec![];
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Whether any shuffle file exists under `dir`.
fn has_shuffle_output(dir: &Path) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "arrow") {
                return true;
            }
        }
    }
    false
}

/// Runs `args` in the background, waits until `executor` has written
/// shuffle output of this new job while the client still runs, then kills
/// the executor. Returns the client, and whether it was still running when
/// the executor died (so the kill was "during" the query).
fn kill_during(executor: &mut Node, config: &Path, args: &[&str]) -> (Child, bool) {
    let before = jobs(executor);
    let mut client = spawn(config, args);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if client.try_wait().unwrap().is_some() {
            return (client, false);
        }
        let new_output = jobs(executor)
            .iter()
            .any(|j| !before.contains(j) && has_shuffle_output(j));
        if new_output {
            executor.kill();
            let running = client.try_wait().unwrap().is_none();
            return (client, running);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = client.kill();
    let _ = client.wait();
    panic!(
        "{} wrote no shuffle output:\n{}",
        executor.name,
        executor.log()
    );
}

/// A query of many tasks (32 partitions, two shuffles) and a join of every
/// user's events with each other, long enough (seconds on one task slot per
/// executor) to kill an executor in its middle.
const LONG_SQL: &str = "SET datafusion.execution.target_partitions = 32; \
     SELECT a.event_type, count(*) AS n FROM clean_events a \
     JOIN clean_events b ON a.user_id = b.user_id GROUP BY 1 ORDER BY 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executors_tasks_run_again_and_with_none_left_the_query_fails_in_one_line() {
    let server = S3Server::start(&["lake"]);
    sample_on_s3(&server).await;
    let mut cluster = Cluster::start(2, 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(dir.path(), &server, "");
    let expected = ok(&config, &["sql", "--format", "csv", LONG_SQL]);
    let url = cluster.url.clone();

    let args = ["sql", "--format", "csv", LONG_SQL, "--cluster", &url];
    let (client, during) = kill_during(&mut cluster.executors[0], &config, &args);
    assert!(
        during,
        "the query ended before the executor could be killed"
    );
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(stdout(&out), expected);

    // The last executor killed mid-query: one line, within the timeouts.
    let started = Instant::now();
    let (client, during) = kill_during(&mut cluster.executors[1], &config, &args);
    assert!(
        during,
        "the query ended before the executor could be killed"
    );
    let out = client.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&cluster.url), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(EXECUTOR_TIMEOUT * 6 + 30),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_input_fails_in_one_line_fast_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("report.json");
    let out_arg = out_file.to_str().unwrap();
    let one_line_failure = |args: &[&str], expect: &str| {
        let started = Instant::now();
        let out = crate::common::run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!out_file.exists(), "{args:?} wrote its output");
        (started.elapsed(), err)
    };
    // malformed
    for bad in ["sched:50050", "http://127.0.0.1:1", "df://", "df://h:1/x"] {
        one_line_failure(
            &[
                "report",
                "--format",
                "json",
                "-o",
                out_arg,
                "--cluster",
                bad,
            ],
            "df://HOST:PORT",
        );
    }
    // unreachable: nothing listens on a free port
    let nobody = format!("df://127.0.0.1:{}", free_port());
    let (took, _) = one_line_failure(
        &[
            "report",
            "--format",
            "json",
            "-o",
            out_arg,
            "--cluster",
            &nobody,
        ],
        "cannot reach the scheduler",
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // a scheduler of another version
    let other = Cluster::start(1, 1, &[("SUPPORTFUNNEL_NODE_VERSION", "0.0.0-other")]);
    let (took, err) = one_line_failure(
        &[
            "sql",
            "--format",
            "csv",
            "-o",
            out_arg,
            "--cluster",
            &other.url,
            "SELECT count(*) FROM events",
        ],
        "version mismatch",
    );
    assert!(
        err.contains("0.0.0-other") && err.contains(&other.url),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    drop(other);

    let cluster = Cluster::start(1, 1, &[]);
    // a statement Ballista may answer wrongly: refused, not run
    one_line_failure(
        &[
            "sql",
            "--format",
            "csv",
            "-o",
            out_arg,
            "--cluster",
            &cluster.url,
            "SELECT (SELECT count(*) FROM events) AS n",
        ],
        "scalar subqueries are not run on a cluster",
    );
    // a report on a cluster without a scratch location
    one_line_failure(
        &[
            "report",
            "--format",
            "json",
            "-o",
            out_arg,
            "--cluster",
            &cluster.url,
        ],
        "--scratch",
    );
    // a hidden file the scheduler's listing would read, and this process
    // would not: refused rather than answered differently
    let hidden = dir.path().join("hidden-events");
    crate::common::copy_dir(Path::new(&crate::common::sample("events")), &hidden);
    std::fs::copy(
        hidden.join("date=2026-02-20/part-00000.parquet"),
        hidden.join("date=2026-02-20/.part-copy.parquet"),
    )
    .unwrap();
    one_line_failure(
        &[
            "sql",
            "--events",
            hidden.to_str().unwrap(),
            "--format",
            "csv",
            "-o",
            out_arg,
            "--cluster",
            &cluster.url,
            "SELECT count(*) FROM events",
        ],
        "would be read by the cluster",
    );
    // a table the executors cannot read: its files overwritten after the
    // client checked them
    let copy = dir.path().join("events");
    crate::common::copy_dir(Path::new(&crate::common::sample("events")), &copy);
    let mut opts = supportfunnel::EngineOptions::new(
        copy.to_str().unwrap(),
        crate::common::sample("messages"),
    )
    .unwrap();
    opts.cluster = Some(supportfunnel::cluster::ClusterUrl::parse(&cluster.url).unwrap());
    let engine = supportfunnel::build_context(&opts).await.unwrap();
    overwrite_files(&copy);
    let e = supportfunnel::engine::query::run_script(
        &engine.ctx,
        "SELECT count(DISTINCT user_id) FROM events",
    )
    .await
    .map_err(|e| {
        supportfunnel::cluster::client::explain(opts.cluster.as_ref().unwrap(), &opts.tables, e)
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&cluster.url) && e.contains(copy.to_str().unwrap()),
        "{e}"
    );
}

fn overwrite_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            overwrite_files(&path);
        } else {
            std::fs::write(&path, b"not a parquet file").unwrap();
        }
    }
}

/// Waits for `child` at most `within`; kills it and fails when it is still
/// running then (a client must never wait forever).
fn finish_within(
    mut child: Child,
    within: Duration,
    what: &str,
    logs: &dyn Fn() -> String,
) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: the client still waited after {within:?}:\n{}\n{}",
                stderr(&out),
                logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The sample's tables by their absolute paths (the same on every node of
/// a loopback cluster: the stand-in for a shared mount).
fn local_tables(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("local.toml");
    std::fs::write(
        &path,
        format!(
            "[[tables]]\nname = \"events\"\nuri = \"{}\"\n\n[[tables]]\nname = \"messages\"\nuri = \"{}\"\n{extra}",
            crate::common::sample("events"),
            crate::common::sample("messages")
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_report_survives_a_killed_executor_or_fails_in_one_line_and_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let config = local_tables(dir.path(), "");
    let period = ["--from", "2026-02-01", "--to", "2026-03-01"];
    let mut local_args = vec!["report", "--format", "json"];
    local_args.extend(period);
    let expected = ok(&config, &local_args);
    // Three tries (before, 3 of 4 hung for ever).
    for attempt in 0..3 {
        let mut cluster = Cluster::start(2, 1, &[]);
        let url = cluster.url.clone();
        let mut args = local_args.clone();
        args.extend([
            "--cluster",
            url.as_str(),
            "--scratch",
            scratch.to_str().unwrap(),
        ]);
        let (client, _during) = kill_during(&mut cluster.executors[attempt % 2], &config, &args);
        let logs = || cluster.logs();
        let out = finish_within(client, Duration::from_secs(240), "report", &logs);
        if out.status.success() {
            let got = stdout(&out);
            if got != expected {
                let differ: Vec<String> = got
                    .lines()
                    .zip(expected.lines())
                    .filter(|(g, e)| g != e)
                    .map(|(g, e)| format!("got {g}\nnot {e}"))
                    .collect();
                panic!(
                    "attempt {attempt}: the report differs from one process's:\n{}\n{}\n{}",
                    differ.join("\n"),
                    stderr(&out),
                    logs()
                );
            }
        } else {
            let err = stderr(&out);
            assert_eq!(err.trim().lines().count(), 1, "attempt {attempt}: {err}");
            assert!(err.contains(&url), "attempt {attempt}: {err}");
        }
    }
}

#[test]
fn interrupted_clients_cancel_their_jobs_and_lost_schedulers_are_said() {
    let mut cluster = Cluster::start(1, 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = local_tables(dir.path(), "");
    let url = cluster.url.clone();
    // A long query, interrupted: its job is cancelled on the scheduler.
    let long = "SET datafusion.execution.target_partitions = 64; \
         SELECT a.user_id, count(*) AS n FROM clean_events a \
         JOIN clean_events b ON a.user_id = b.user_id \
         JOIN clean_events c ON b.user_id = c.user_id GROUP BY 1 ORDER BY 2 DESC LIMIT 3";
    let child = spawn(
        &config,
        &["sql", "--format", "csv", long, "--cluster", &url],
    );
    cluster
        .scheduler
        .wait_for_line("Job submitted", Duration::from_secs(60));
    // SAFETY: kill(2) with our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    cluster
        .scheduler
        .wait_for_line("Job cancelled", Duration::from_secs(30));

    // The scheduler lost mid-query: one line naming it, within a bound.
    let child = spawn(
        &config,
        &["sql", "--format", "csv", long, "--cluster", &url],
    );
    let submitted = cluster.logs().matches("Job submitted").count();
    let start = Instant::now();
    while cluster.scheduler.log().matches("Job submitted").count() <= submitted {
        assert!(start.elapsed() < Duration::from_secs(60), "not submitted");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.scheduler.kill();
    let out = finish_within(child, Duration::from_secs(120), "lost scheduler", &|| {
        String::new()
    });
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("scheduler") && err.contains(&url), "{err}");
}

#[test]
fn state_report_function_and_relative_scratch_work_on_a_cluster() {
    let cluster = Cluster::start(2, 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    let out = |name: &str| dir.path().join(name).display().to_string();
    // The scheduled job with [state], on the cluster and in one process.
    let job = |name: &str, cluster_url: Option<&str>| {
        let mut extra = format!(
            "[output]\nlocation = \"{o}/report\"\nsessions_location = \"{o}/sessions\"\n\n\
             [[reports]]\nname = \"daily\"\nperiod = \"daily\"\nsessions = true\n\n\
             [state]\nlocation = \"{o}/state\"\n",
            o = out(name)
        );
        if let Some(u) = cluster_url {
            extra.push_str(&format!(
                "\n[engine]\ncluster = \"{u}\"\nscratch = \"rel-scratch\"\n"
            ));
        }
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            std::fs::read_to_string(local_tables(dir.path(), "")).unwrap() + &extra,
        )
        .unwrap();
        path
    };
    let (on, off) = (job("on", Some(&cluster.url)), job("off", None));
    for (date, mode) in [("2026-02-20", "full"), ("2026-02-21", "incremental")] {
        for config in [&on, &off] {
            let o = bin()
                .current_dir(&client_dir)
                .arg("--config")
                .arg(config)
                .args(["run", "--date", date])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{date}: {}\n{}",
                stderr(&o),
                cluster.logs()
            );
            assert!(
                stdout(&o).contains(&format!("\"mode\":\"{mode}\"")),
                "{date}: {}",
                stdout(&o)
            );
        }
        for table in ["report", "sessions"] {
            let file = |name: &str| {
                std::fs::read(format!(
                    "{}/{table}/report=daily/report_date={date}/data.parquet",
                    out(name)
                ))
                .unwrap()
            };
            assert_eq!(
                parquet_rows(&file("on")),
                parquet_rows(&file("off")),
                "{table} {date}"
            );
        }
    }
    // A relative --scratch is the client's: the report works, and leaves
    // nothing there.
    let config = local_tables(dir.path(), "");
    let report = |extra: &[&str]| {
        let mut args = vec![
            "report",
            "--format",
            "json",
            "--from",
            "2026-02-01",
            "--to",
            "2026-03-01",
        ];
        args.extend(extra);
        let o = bin()
            .current_dir(&client_dir)
            .arg("--config")
            .arg(&config)
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(
        report(&["--cluster", &cluster.url, "--scratch", "rel-scratch"]),
        report(&[])
    );
    let left = std::fs::read_dir(client_dir.join("rel-scratch"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "scratch left behind");
    // report() in ad-hoc SQL on the cluster: the same rows as in one process.
    let sql = "SELECT section, metric, segment, current, previous \
               FROM report('2026-02-01', '2026-03-01', 'UTC') ORDER BY 1, 2, 3";
    let sql_on = |extra: &[&str]| {
        let mut args = vec!["sql", "--format", "csv", sql];
        args.extend(extra);
        let o = bin()
            .current_dir(&client_dir)
            .arg("--config")
            .arg(&config)
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        stdout(&o)
    };
    let local = sql_on(&[]);
    assert!(local.lines().count() > 40, "{local}");
    assert_eq!(
        sql_on(&["--cluster", &cluster.url, "--scratch", "rel-scratch"]),
        local
    );
}

#[test]
fn an_executor_starts_from_an_empty_work_directory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    // What an executor killed, or left by its scheduler, may leave behind.
    let old = work.join("shuffle/OLDJOB123/1/0");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("data.arrow"), vec![0u8; 4096]).unwrap();
    std::fs::create_dir_all(work.join("spill/datafusion-old")).unwrap();
    let (_scheduler, addr) = start_scheduler(dir.path(), &[], &[]);
    // Returns once the executor has registered.
    let _executor = start_executor("executor", dir.path(), &addr, &work, &[], &[]);
    assert!(!work.join("shuffle/OLDJOB123").exists());
    assert!(!work.join("spill/datafusion-old").exists());
}

/// `serve --cluster`: a PostgreSQL client's queries run as jobs on the
/// cluster (the scheduler accepts them) and give what one process gives,
/// `report()` included; a client's cancel request cancels the running job,
/// also one still being sent or planned, and its tasks let go of the
/// executors.
#[cfg(feature = "serve")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_cluster_runs_queries_as_jobs_and_cancels_them() {
    use tokio_postgres::NoTls;
    let mut cluster = Cluster::start(2, 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = local_tables(dir.path(), "");
    let scratch = dir.path().join("scratch");
    let (sessions, report) = (
        "SELECT status, count(*) AS n, sum(actions) AS a FROM sessions \
         GROUP BY status ORDER BY status",
        "SELECT section, metric, segment, current, previous \
         FROM report('2026-02-01', '2026-03-01') ORDER BY section, metric, segment",
    );
    let serve = |cluster_args: &[&str]| {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--listen",
            listen.as_str(),
        ];
        args.extend_from_slice(cluster_args);
        let mut node = Node::start("serve", dir.path(), &args, &[]);
        node.wait_for_line("serving on", Duration::from_secs(120));
        (node, listen)
    };
    let (_local_server, local) = serve(&[]);
    let (_server, remote) = serve(&[
        "--cluster",
        &cluster.url,
        "--scratch",
        scratch.to_str().unwrap(),
    ]);
    let local = crate::serve::connect(local.parse().unwrap()).await;
    let client = crate::serve::connect(remote.parse().unwrap()).await;
    let mut one_process = Vec::new();
    for sql in [sessions, report] {
        one_process.push(crate::serve::simple(&local, sql).await);
    }
    let jobs = || cluster.scheduler.log().matches("Job submitted").count();
    for (sql, expected) in [sessions, report].iter().zip(&one_process) {
        let before = jobs();
        let rows = crate::serve::simple(&client, sql).await;
        assert!(rows.len() > 2, "{sql}: {rows:?}");
        assert_eq!(&rows, expected, "{sql}");
        assert!(jobs() > before, "{sql} ran no job on the cluster");
    }

    // A long query, cancelled as psql's Ctrl-C does: its job is cancelled.
    let long = "SELECT count(*) FROM sessions a JOIN sessions b ON a.status = b.status \
                JOIN sessions c ON b.status = c.status";
    let token = client.cancel_token();
    let before = jobs();
    let (result, ()) = tokio::join!(client.simple_query(long), async {
        let start = Instant::now();
        while jobs() == before {
            assert!(start.elapsed() < Duration::from_secs(60), "not submitted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        token.cancel_query(NoTls).await.unwrap();
    });
    let (code, _) = crate::serve::sql_error(result.unwrap_err());
    assert_eq!(code, "57014", "query_canceled");
    cluster
        .scheduler
        .wait_for_line("Job cancelled", Duration::from_secs(30));
    // Cancelled at once, while the job is being sent and planned: its id
    // may not have reached the client yet, and Ballista does not stop a job
    // cancelled while it is planned. It is cancelled all the same, and
    // stays cancelled once planned.
    let log = || cluster.scheduler.log();
    let queued = log().matches("Job queued: [").count();
    let received = || log().matches("execution query job received").count();
    let before = received();
    let cancelled = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(client.simple_query(long), async {
            let start = Instant::now();
            while received() == before {
                assert!(start.elapsed() < Duration::from_secs(60), "not received");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            token.cancel_query(NoTls).await.unwrap();
        })
    });
    let Ok((result, ())) = cancelled.await else {
        panic!("the query cancelled at once did not end:\n{}", log());
    };
    let (code, _) = crate::serve::sql_error(result.unwrap_err());
    assert_eq!(code, "57014", "query_canceled");
    let start = Instant::now();
    loop {
        let text = log();
        let id = text
            .split("Job queued: [")
            .nth(queued + 1)
            .and_then(|r| r.split(']').next());
        let after_planned = id.and_then(|id| {
            let submitted = text.find(&format!("Job submitted: [{id}]"))?;
            text[submitted..].find(&format!("Job cancelled: [{id}]"))
        });
        if after_planned.is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "job {id:?} not cancelled once planned:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection goes on, and the cluster is free for it.
    let Ok(rows) = tokio::time::timeout(
        Duration::from_secs(120),
        crate::serve::simple(&client, sessions),
    )
    .await
    else {
        panic!("the cluster is still busy:\n{}", log());
    };
    assert_eq!(rows, one_process[0]);
    assert!(!scratch.exists() || std::fs::read_dir(&scratch).unwrap().next().is_none());
}

/// Executors whose memory limit the operators' build does not fit in: the
/// build spills on the executor (its log says how much), and the report
/// equals one process's. (The history is generated: about 3.4M events,
/// whose build holds about 160 MiB; each executor gets 128 MiB.)
#[test]
fn a_report_whose_build_spills_on_the_executors_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("history");
    let out = bin()
        .args(["gen", "--out", data.to_str().unwrap()])
        .args(["--users", "100000", "--days", "60", "--seed", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.path().join("tables.toml");
    std::fs::write(
        &config,
        format!(
            "[[tables]]\nname = \"events\"\nuri = \"{0}/events\"\n\n\
             [[tables]]\nname = \"messages\"\nuri = \"{0}/messages\"\n",
            data.display()
        ),
    )
    .unwrap();
    let cluster = Cluster::start_with(2, 1, &["--memory-limit", "128MiB"], &[]);
    let scratch = dir.path().join("scratch");
    let args = [
        "report",
        "--format",
        "csv",
        "--from",
        "2026-01-15",
        "--to",
        "2026-02-15",
    ];
    let local = ok(&config, &args);
    let mut on = args.to_vec();
    on.extend([
        "--cluster",
        &cluster.url,
        "--scratch",
        scratch.to_str().unwrap(),
    ]);
    let remote = ok(&config, &on);
    assert!(local.lines().count() > 40, "{local}");
    assert_eq!(local, remote);
    let logs = cluster.logs();
    let spilled: u64 = logs
        .lines()
        .filter(|l| l.contains("operators built"))
        .filter_map(|l| {
            l.split(" segments spilled")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(spilled > 0, "no build spilled: {logs}");
}
