//! `serve`, the PostgreSQL-wire endpoint, with real clients: tokio-postgres
//! (simple and extended protocol, prepared statements with parameters) on a
//! server started in this process, and psql on the `serve` command started
//! as a child process. Every server listens on 127.0.0.1 on a port the
//! system chose, and is stopped when its handle is dropped (a failing
//! assertion's unwinding included).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use supportfunnel::report::{rows_of, run_report, ReportOptions};
use supportfunnel::serve::{self, ServeOptions, Server};
use supportfunnel::{build_context, Engine, EngineOptions};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::common::{bin, free_port, rows, sample_options, Node};

/// A query of 10¹¹ rows, which runs for many minutes, one batch of 8,192
/// rows at a time (so it yields to other tasks and can be stopped between
/// batches), for the tests that stop one in its middle.
pub(crate) const ENDLESS: &str = "SELECT count(*) FROM generate_series(1, 100000000000)";

/// The sample's engine as `serve` builds it (no URL tables).
pub(crate) async fn engine() -> Engine {
    let engine = build_context(&EngineOptions {
        no_url_tables: true,
        ..sample_options()
    })
    .await
    .unwrap();
    supportfunnel::report::table_function::register(&engine, chrono_tz::UTC);
    engine
}

pub(crate) async fn start(engine: &Engine, password: Option<&str>) -> Server {
    serve::start(
        engine,
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            password: password.map(str::to_string),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

pub(crate) async fn connect_as(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("datafusion")
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

pub(crate) async fn connect(addr: SocketAddr) -> Client {
    connect_as(addr, "supportfunnel", "").await.unwrap()
}

/// The rows of a simple query as text, columns joined by `|`.
pub(crate) async fn simple(client: &Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and message of a failed statement.
pub(crate) fn sql_error(e: tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// Runs [`ENDLESS`] on `client` and cancels it, as psql's Ctrl-C does, once
/// the server counts it as running; returns how the query ended.
pub(crate) async fn cancelled_endless(
    server: &Server,
    client: &Client,
) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
    let token = client.cancel_token();
    let (result, ()) = tokio::join!(client.simple_query(ENDLESS), async {
        eventually(Duration::from_secs(20), "the query started", || {
            server.active_queries() == 1
        })
        .await;
        token.cancel_query(NoTls).await.unwrap();
    });
    result
}

/// Waits until `cond` holds, at most `within`.
pub(crate) async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simple_and_extended_queries_give_what_datafusion_gives() {
    let engine = engine().await;
    let server = start(&engine, None).await;
    let client = connect(server.local_addr()).await;

    let sql = "SELECT status, count(*) AS n FROM sessions GROUP BY status ORDER BY status";
    let expected: Vec<String> = rows(&engine.ctx, sql)
        .await
        .into_iter()
        .map(|r| r.replace(", ", "|"))
        .collect();
    assert_eq!(simple(&client, sql).await, expected);
    assert_eq!(expected.len(), 4);

    // Extended protocol: a prepared statement with a text and an integer
    // parameter, run twice with different values.
    let stmt = client
        .prepare(
            "SELECT count(*) AS n, sum(actions) AS actions FROM sessions \
             WHERE user_id = $1 AND actions >= $2",
        )
        .await
        .unwrap();
    for (user, min) in [("u00001002", 1_i64), ("u00000087", 3)] {
        let row = client.query_one(&stmt, &[&user, &min]).await.unwrap();
        let n: i64 = row.get("n");
        let actions: i64 = row.get("actions");
        let want = rows(
            &engine.ctx,
            &format!(
                "SELECT count(*), sum(actions) FROM sessions WHERE user_id = '{user}' AND actions >= {min}"
            ),
        )
        .await;
        assert_eq!(vec![format!("{n}|{actions}")], want);
        assert!(n > 0);
    }

    // The report as a table function, as `report --from --to` computes it.
    // (Through the extended protocol; its arguments are constants: they
    // decide the period when the statement is planned.)
    let got = client
        .query(
            "SELECT section, metric, segment, current, previous \
             FROM report('2026-02-01', '2026-03-01', 'UTC')",
            &[],
        )
        .await
        .unwrap();
    let e = client
        .query("SELECT * FROM report($1, '2026-03-01')", &[&"2026-02-01"])
        .await
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("write the dates in the query"),
        "{e:?}"
    );
    let report = run_report(
        &engine,
        &ReportOptions {
            from: Some("2026-02-01".parse().unwrap()),
            to: Some("2026-03-01".parse().unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let want = rows_of(&report.batch);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.get::<_, &str>("section"), w.section);
        assert_eq!(g.get::<_, &str>("metric"), w.metric);
        assert_eq!(g.get::<_, Option<&str>>("segment"), w.segment.as_deref());
        assert_eq!(g.get::<_, Option<f64>>("current"), w.current);
        assert_eq!(g.get::<_, Option<f64>>("previous"), w.previous);
    }
    // Bad calls are plain SQL errors.
    let e = client
        .simple_query("SELECT * FROM report('2026-03-01', '2026-02-01')")
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("must be after"), "{e:?}");
    let e = client
        .simple_query("SELECT * FROM report('-262143-01-01', '-262143-01-02')")
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("between 1 and 9999"), "{e:?}");
    let e = client
        .simple_query("SELECT * FROM report('2026-02-01', '2026-03-01', 'UTC', 'colour=red')")
        .await
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("unknown filter `colour`"),
        "{e:?}"
    );
    assert_eq!(server.active_queries(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_and_engine_options_are_refused_and_the_connection_goes_on() {
    let engine = engine().await;
    let server = start(&engine, None).await;
    let client = connect(server.local_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let copy_to = dir.path().join("out.csv");
    for (sql, code, text) in [
        (
            "CREATE TABLE t AS SELECT 1",
            "25006",
            "CREATE TABLE is refused",
        ),
        (
            "CREATE VIEW v AS SELECT 1",
            "25006",
            "CREATE VIEW is refused",
        ),
        ("DROP VIEW sessions", "25006", "DROP VIEW is refused"),
        (
            "INSERT INTO events SELECT * FROM events LIMIT 1",
            "25006",
            "INSERT INTO is refused",
        ),
        (
            &format!("COPY (SELECT 1) TO '{}'", copy_to.display()),
            "25006",
            "COPY is refused",
        ),
        (
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
            "25006",
            "is refused",
        ),
        ("SELECT 1 AS a INTO t", "25006", "SELECT … INTO is refused"),
        (
            "WITH x AS (SELECT 1 AS a) SELECT * INTO t FROM x UNION SELECT 2",
            "25006",
            "SELECT … INTO is refused",
        ),
        (
            "DECLARE c CURSOR FOR SELECT 1 AS a INTO t",
            "25006",
            "SELECT … INTO is refused",
        ),
        (
            "SET datafusion.execution.target_partitions = 64",
            "42501",
            "engine option `datafusion.execution.target_partitions` cannot be changed",
        ),
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        let (got_code, message) = sql_error(e);
        assert_eq!(got_code, code, "{sql}: {message}");
        assert!(message.contains(text), "{sql}: {message}");
        // The same through the extended protocol (refused when parsed).
        let e = client.prepare(sql).await.unwrap_err();
        assert_eq!(sql_error(e).0, code, "{sql} (extended)");
    }
    assert!(!copy_to.exists(), "COPY wrote a file");
    assert!(
        client.simple_query("SELECT * FROM t").await.is_err(),
        "no table `t` was made"
    );
    // No file of the server's is readable by its path, only the tables.
    let file = crate::common::sample("events");
    let e = client
        .simple_query(&format!("SELECT count(*) FROM '{file}'"))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("not found"), "{e:?}");
    // What tools and poolers send runs, in both protocols.
    for sql in [
        "BEGIN",
        "SAVEPOINT a",
        "RELEASE SAVEPOINT a",
        "COMMIT",
        "RESET statement_timeout",
        "RESET ALL",
        "DISCARD ALL",
    ] {
        simple(&client, sql).await;
        client
            .execute(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    // Session settings still work, and the tables are untouched.
    simple(&client, "SET application_name = 'metabase'").await;
    simple(&client, "SET statement_timeout = '60s'").await;
    assert_eq!(
        simple(&client, "SELECT count(*) FROM events").await,
        rows(&engine.ctx, "SELECT count(*) FROM events").await
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_is_required_and_checked() {
    let engine = engine().await;
    let server = start(&engine, Some("s3cret-pw")).await;
    let addr = server.local_addr();
    let client = connect_as(addr, "supportfunnel", "s3cret-pw")
        .await
        .unwrap();
    assert_eq!(simple(&client, "SELECT 40 + 2").await, ["42"]);
    for (user, password) in [
        ("supportfunnel", "wrong"),
        ("supportfunnel", ""),
        ("someone_else", "s3cret-pw"),
    ] {
        let e = connect_as(addr, user, password)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user}/{password} logged in"));
        let text = format!("{e:?}");
        assert!(
            text.contains("28P01") || text.contains("password"),
            "{user}/{password}: {text}"
        );
    }
    server.shutdown().await;

    // Without a password, only loopback.
    let e = serve::start(
        &engine,
        ServeOptions {
            listen: "0.0.0.0:0".parse().unwrap(),
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("refused");
    assert!(e.to_string().contains("loopback"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_at_once_each_get_their_own_answer() {
    let engine = engine().await;
    let server = start(&engine, None).await;
    let addr = server.local_addr();
    let users: Vec<String> = rows(
        &engine.ctx,
        "SELECT user_id FROM sessions GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 20",
    )
    .await;
    let mut expected = Vec::new();
    for u in &users {
        expected.push(
            rows(
                &engine.ctx,
                &format!("SELECT count(*), sum(actions) FROM sessions WHERE user_id = '{u}'"),
            )
            .await[0]
                .replace(", ", "|"),
        );
    }
    let mut tasks = Vec::new();
    for (i, u) in users.iter().cloned().enumerate() {
        tasks.push(tokio::spawn(async move {
            let client = connect(addr).await;
            // Each session's own time zone, set at once by all of them.
            let zone = if i % 2 == 0 { "UTC" } else { "Asia/Tokyo" };
            simple(&client, &format!("SET TIME ZONE '{zone}'")).await;
            let local = simple(
                &client,
                "SELECT CAST(CAST(TIMESTAMP '2026-01-01 00:00:00' AS TIMESTAMP WITH TIME ZONE) AS VARCHAR)",
            )
            .await;
            let offset = if i % 2 == 0 { "Z" } else { "+09:00" };
            assert!(local[0].ends_with(offset), "client {i} in {zone}: {local:?}");
            let got = if i % 2 == 0 {
                simple(
                    &client,
                    &format!("SELECT count(*), sum(actions) FROM sessions WHERE user_id = '{u}'"),
                )
                .await
            } else {
                let row = client
                    .query_one(
                        "SELECT count(*), sum(actions) FROM sessions WHERE user_id = $1",
                        &[&u],
                    )
                    .await
                    .unwrap();
                vec![format!("{}|{}", row.get::<_, i64>(0), row.get::<_, i64>(1))]
            };
            (i, got)
        }));
    }
    for t in tasks {
        let (i, got) = t.await.unwrap();
        assert_eq!(got, vec![expected[i].clone()], "client {i}");
    }
    eventually(Duration::from_secs(10), "connections closed", || {
        server.connections() == 0
    })
    .await;
    server.shutdown().await;
}

// Sixteen workers, as `serve` has on this 2-core machine (eight per core,
// at least 16: see `worker_threads` in src/cli/commands.rs). With two, the
// long query's tasks hold both and nothing else runs (docs/SERVE.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 16)]
async fn a_long_query_ends_on_disconnect_cancel_or_timeout_and_blocks_nobody() {
    let engine = engine().await;
    let server = start(&engine, None).await;
    let addr = server.local_addr();

    // 1. The client goes away mid-query (before the first row): the query
    //    stops with its connection.
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(addr.port())
        .user("supportfunnel")
        .connect(NoTls)
        .await
        .unwrap();
    let conn_task = tokio::spawn(connection);
    // What the operators' build keeps for the next query (counted in the
    // pool) stays; the long query's own memory goes.
    rows(&engine.ctx, "SELECT count(*) FROM sessions").await;
    let pool = engine.ctx.runtime_env().memory_pool.clone();
    let kept = pool.reserved();
    let query = tokio::spawn(async move {
        let _ = client.simple_query(ENDLESS).await;
    });
    eventually(Duration::from_secs(20), "the query started", || {
        server.active_queries() == 1
    })
    .await;
    // While it runs, another client is served.
    let other = connect(addr).await;
    assert_eq!(
        simple(&other, "SELECT count(*) FROM generate_series(1, 10)").await,
        ["10"]
    );
    assert_eq!(
        simple(&other, "SELECT count(*) FROM sessions").await,
        rows(&engine.ctx, "SELECT count(*) FROM sessions").await
    );
    assert_eq!(server.active_queries(), 1, "the long query still runs");
    // Dropping the connection task closes the socket.
    conn_task.abort();
    query.abort();
    eventually(
        Duration::from_secs(10),
        "the query stopped with its client",
        || server.active_queries() == 0,
    )
    .await;
    eventually(Duration::from_secs(10), "its memory is given back", || {
        pool.reserved() <= kept
    })
    .await;

    // 2. Cancelled by its client (what psql's Ctrl-C sends).
    let client = connect(addr).await;
    let result = cancelled_endless(&server, &client).await;
    let (code, message) = sql_error(result.unwrap_err());
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("user request"), "{message}");
    // The connection is usable after.
    assert_eq!(simple(&client, "SELECT 1").await, ["1"]);

    // 3. The client's statement timeout.
    simple(&client, "SET statement_timeout = 300").await;
    let e = client.simple_query(ENDLESS).await.unwrap_err();
    let (code, message) = sql_error(e);
    assert_eq!(code, "57014");
    assert!(message.contains("statement timeout"), "{message}");
    assert_eq!(server.active_queries(), 0);
    drop(client);
    drop(other);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 16)]
async fn a_full_server_still_takes_a_cancel_request() {
    let engine = engine().await;
    let server = serve::start(
        &engine,
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_connections: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let client = connect(addr).await;
    // The one slot is taken: another client is turned away...
    assert!(connect_as(addr, "supportfunnel", "").await.is_err());
    // ...but the first one's cancel request is served.
    let result = cancelled_endless(&server, &client).await;
    assert_eq!(sql_error(result.unwrap_err()).0, "57014");
    drop(client);
    server.shutdown().await;
}

/// A self-signed certificate and key for 127.0.0.1, as PEM files.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

fn psql(port: u16, extra: &str, password: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user=analyst dbname=datafusion {extra}"
        ))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs (Debian package postgresql-client; .ci/run installs it)")
}

/// Whether psql is there. CI (`.ci/run`) installs it and sets
/// `SUPPORTFUNNEL_REQUIRE_PSQL=1`, so there a missing psql fails the test;
/// a newcomer's plain `cargo test` without it skips this one test and says so.
fn have_psql() -> bool {
    let found = Command::new("psql").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("SUPPORTFUNNEL_REQUIRE_PSQL").is_none(),
            "psql not found (Debian package postgresql-client)"
        );
        eprintln!("psql not found: the psql test is skipped (install postgresql-client)");
    }
    found
}

#[test]
fn psql_queries_the_serve_command_over_tls_with_a_password() {
    if !have_psql() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let root = env!("CARGO_MANIFEST_DIR");
    let mut server = Node::start(
        "serve",
        std::path::Path::new(root),
        &[
            "serve",
            "--listen",
            &listen,
            "--user",
            "analyst",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[("SUPPORTFUNNEL_PG_PASSWORD", "pw-from-env")],
    );
    let line = server.wait_for_line("serving on", Duration::from_secs(120));
    assert!(
        line.contains("TLS") && line.contains("user analyst"),
        "{line}"
    );
    // The password is not on the command line for `ps` to show.
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", server.child.id())).unwrap();
    assert!(!cmdline.contains("pw-from-env"));

    let expected = bin()
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM sessions WHERE status = 'stopped'",
        ])
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&expected.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let out = psql(
        port,
        "sslmode=require",
        "pw-from-env",
        "SELECT count(*) AS n FROM sessions WHERE status = 'stopped'",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    // The report function, from psql.
    let out = psql(
        port,
        "sslmode=require",
        "pw-from-env",
        "SELECT current FROM report('2026-02-01', '2026-03-01', 'UTC') WHERE metric = 'sessions_total'",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (arrow-pg writes a Float64 as `5266.0` where PostgreSQL writes `5266`.)
    let got: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(got, 5266.0);
    // A wrong password, and a write, are refused with psql's exit code 2 / 1.
    let out = psql(port, "sslmode=require", "nope", "SELECT 1");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With TLS configured, a plain connection is refused.
    let out = psql(port, "sslmode=disable", "pw-from-env", "SELECT 1");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS connections only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Files are reachable only as the registered tables, not by path.
    let file = crate::common::sample("events");
    let out = psql(
        port,
        "sslmode=require",
        "pw-from-env",
        &format!("SELECT count(*) FROM '{file}'"),
    );
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = psql(port, "sslmode=require", "pw-from-env", "DROP TABLE events");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    server.kill();
}

#[test]
fn serve_refuses_bad_settings_in_one_line() {
    let out = bin()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("SUPPORTFUNNEL_PG_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.pem");
    let out = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            missing.to_str().unwrap(),
            "--tls-key",
            missing.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a missing certificate must not fall back to plain text"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none.pem"), "{err}");
    let out = bin()
        .args(["serve", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen address `nowhere`"));
    let out = bin()
        .args(["serve", "--cluster", "df://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // a cluster nobody listens at: one line naming it
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("df://127.0.0.1:1") && err.contains("cannot reach the scheduler"),
        "{err}"
    );
    // --help says what serve does: the cluster it may use, TLS required when on
    let help = bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--cluster") && help.contains("--scratch"),
        "{help}"
    );
    assert!(help.contains("every connection must use TLS"), "{help}");
}

/// `serve` of the sample on a free loopback port, without a password,
/// accepting connections; and its port.
fn serve_the_sample() -> (Node, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Node::start(
        "serve",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        &["serve", "--listen", &listen],
        &[],
    );
    server.wait_for_line("serving on", Duration::from_secs(120));
    (server, port)
}

/// The Python with SQLAlchemy, psycopg2 and pandas to drive the server
/// with: `$SUPPORTFUNNEL_PYTHON`, else `python3`. `None` (the test is
/// skipped, saying so) when it lacks them, unless
/// `SUPPORTFUNNEL_REQUIRE_PYTHON` is set, as in `.ci/run`, which installs
/// them.
fn python_with_sqlalchemy() -> Option<String> {
    let python = std::env::var("SUPPORTFUNNEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import sqlalchemy, psycopg2, pandas"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("SUPPORTFUNNEL_REQUIRE_PYTHON").is_none(),
        "{python} lacks sqlalchemy, psycopg2 or pandas (.ci/run installs them)"
    );
    eprintln!("note: skipped: {python} lacks sqlalchemy, psycopg2 or pandas");
    None
}

#[test]
fn sqlalchemy_pandas_and_superset_calls_work_against_serve() {
    let Some(python) = python_with_sqlalchemy() else {
        return;
    };
    let (server, port) = serve_the_sample();
    let root = env!("CARGO_MANIFEST_DIR");
    // What the CLI counts, per event type, as JSON.
    let counts = bin()
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT event_type, count(*) AS n FROM events WHERE event_type IS NOT NULL \
             GROUP BY 1 ORDER BY 1",
        ])
        .output()
        .unwrap();
    assert!(counts.status.success());
    let expected: serde_json::Map<String, serde_json::Value> = String::from_utf8(counts.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (t, n) = l.rsplit_once(',').unwrap();
            (
                t.to_string(),
                serde_json::Value::from(n.parse::<u64>().unwrap()),
            )
        })
        .collect();
    let script = std::path::Path::new(root).join("tests/clients/sqlalchemy_client.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(format!(
            "postgresql+psycopg2://supportfunnel@127.0.0.1:{port}/datafusion"
        ))
        .arg(serde_json::Value::Object(expected).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("core select"), "{printed}");
}

/// `java` and pgjdbc's jar (`$SUPPORTFUNNEL_PGJDBC`, else Debian's
/// `libpostgresql-jdbc-java`); `None` (skipped, saying so) when missing,
/// unless `SUPPORTFUNNEL_REQUIRE_JDBC` is set, as in `.ci/run`, which
/// installs the package.
fn java_with_pgjdbc() -> Option<String> {
    let jar = std::env::var("SUPPORTFUNNEL_PGJDBC")
        .unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    let java = std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if java && std::path::Path::new(&jar).exists() {
        return Some(jar);
    }
    assert!(
        std::env::var_os("SUPPORTFUNNEL_REQUIRE_JDBC").is_none(),
        "java or pgjdbc ({jar}) missing (.ci/run installs libpostgresql-jdbc-java)"
    );
    eprintln!("note: skipped: java or pgjdbc ({jar}) missing");
    None
}

#[test]
fn pgjdbc_metadata_and_prepared_statements_work_against_serve() {
    let Some(jar) = java_with_pgjdbc() else {
        return;
    };
    let (server, port) = serve_the_sample();
    let root = env!("CARGO_MANIFEST_DIR");
    let count = bin()
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM events WHERE event_type = 'article_view'",
        ])
        .output()
        .unwrap();
    assert!(count.status.success());
    let count = String::from_utf8(count.stdout).unwrap();
    let expected = count.lines().nth(1).unwrap().trim().to_string();
    let script = std::path::Path::new(root).join("tests/clients/JdbcClient.java");
    let out = std::process::Command::new("java")
        .arg("-cp")
        .arg(&jar)
        .arg(script)
        .arg(format!("jdbc:postgresql://127.0.0.1:{port}/datafusion"))
        .arg(&expected)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("prepared statement"),
        "{printed}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(printed.contains("product PostgreSQL 16."), "{printed}");
}
