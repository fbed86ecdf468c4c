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
use supportfunnel::storage::s3_builder;

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
        let dir = tempfile::tempdir().unwrap();
        let timeout = EXECUTOR_TIMEOUT.to_string();
        let tasks = tasks.to_string();
        let mut scheduler = Node::start(
            "scheduler",
            dir.path(),
            &[
                "scheduler",
                "--bind",
                "127.0.0.1:0",
                "--executor-timeout",
                &timeout,
            ],
            env,
        );
        let line = scheduler.wait_for_line("scheduler listening on", Duration::from_secs(60));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_string();
        let mut nodes = Vec::new();
        for i in 0..executors {
            let work = dir.path().join(format!("executor-{i}"));
            let (flight, grpc) = (free_port().to_string(), free_port().to_string());
            let mut node = Node::start(
                &format!("executor-{i}"),
                dir.path(),
                &[
                    "executor",
                    "--scheduler",
                    &addr,
                    "--bind",
                    &format!("127.0.0.1:{flight}"),
                    "--grpc-port",
                    &grpc,
                    "--work-dir",
                    work.to_str().unwrap(),
                    "--concurrent-tasks",
                    &tasks,
                    "--heartbeat-interval",
                    "1",
                ],
                env,
            );
            node.work_dir = Some(work);
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_for_line("registration succeed", Duration::from_secs(60));
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

    // The report, for a given period and for the default one.
    for period in [&["--from", "2026-02-01", "--to", "2026-03-01"][..], &[][..]] {
        let mut args = vec!["report", "--format", "json"];
        args.extend_from_slice(period);
        let local = ok(&config, &args);
        args.extend_from_slice(&on);
        let remote = ok(&config, &args);
        assert!(local.lines().count() > 40, "{local}");
        assert_eq!(local, remote, "report {period:?}");
    }

    // Ad-hoc SQL: the window function, views, a join.
    for sql in SQL_CHECKS {
        let local = ok(&config, &["sql", "--format", "csv", sql]);
        let remote = ok(&config, &["sql", "--format", "csv", sql, on[0], on[1]]);
        assert!(local.lines().count() > 1, "{sql}: {local}");
        assert_eq!(local, remote, "{sql}");
    }

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

/// The jobs (top-level directories) an executor's work directory holds.
fn jobs(executor: &Node) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(executor.work_dir.as_ref().unwrap()) else {
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
    // a table the executors cannot read: its files overwritten after the
    // client checked them
    let copy = dir.path().join("events");
    copy_dir(Path::new(&crate::common::sample("events")), &copy);
    let mut opts = supportfunnel::EngineOptions::new(
        copy.to_str().unwrap(),
        crate::common::sample("messages"),
    )
    .unwrap();
    opts.cluster = Some(supportfunnel::cluster::ClusterUrl::parse(&cluster.url).unwrap());
    let engine = supportfunnel::build_context(&opts).await.unwrap();
    overwrite_files(&copy);
    let e =
        supportfunnel::query::run_script(&engine.ctx, "SELECT count(DISTINCT user_id) FROM events")
            .await
            .map_err(|e| {
                supportfunnel::cluster::client::explain(
                    opts.cluster.as_ref().unwrap(),
                    &opts.tables,
                    e,
                )
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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
