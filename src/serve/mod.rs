//! `supportfunnel serve`: the registered tables, views and functions over
//! the PostgreSQL wire protocol (datafusion-postgres on pgwire), so psql,
//! Metabase, Superset, Grafana, DBeaver and psycopg query them.
//!
//! What a data engineer can rely on:
//!
//! * **Read-only.** Every statement is checked before DataFusion sees it
//!   ([`check_statement`]): queries, `EXPLAIN`, `SHOW`, cursors,
//!   transactions (which only answer; there is nothing to commit) and `SET`
//!   of session settings (`statement_timeout`, `DateStyle`, `TimeZone`,
//!   `application_name`, …) run; DDL, `INSERT`/`UPDATE`/`DELETE`, `COPY`
//!   and `SET`/`RESET` of engine options (any dotted name such as
//!   `datafusion.execution.batch_size`) are refused with SQLSTATE 25006
//!   (`read_only_sql_transaction`) or 42501 for engine options.
//! * **Authentication.** With a password (`$SUPPORTFUNNEL_PG_PASSWORD` or
//!   `[serve] password`), clients log in as the one configured user with
//!   SCRAM-SHA-256 (the password never crosses the wire, and with TLS the
//!   login is bound to the certificate: SCRAM-SHA-256-PLUS). Without one
//!   the server trusts whoever connects, so it refuses to listen on
//!   anything but a loopback address. TLS is on when a certificate and key
//!   are configured, and then required of every connection; a certificate
//!   that cannot be loaded is an error at start, never a silent fallback to
//!   plain text.
//! * **Logins.** A connection has `--login-timeout` (10 s) to log in and
//!   holds no `--max-connections` slot until it has: silent or slow sockets
//!   cannot lock clients out ([`connection`]). A peer whose logins fail is
//!   answered more slowly each time, and each failure is a warning naming
//!   peer and user ([`auth`]). A full server answers 53300.
//! * **Sessions.** Each connection gets a session of its own, copied from
//!   the server's (tables, views, functions, options): what one client's
//!   `SET TIME ZONE` or cursor does is not seen by another. The runtime —
//!   memory pool and spill directory — is shared, so `--memory-limit` holds
//!   for the whole server. Each statement that reads a table sees the
//!   table's files as they are when it starts ([`crate::engine::context::refresh`]).
//! * **Settings.** `SET`, `SHOW` and the startup packet's parameters are
//!   honoured, accepted where that is the truth, or refused as PostgreSQL
//!   refuses them ([`settings`]); column names are PostgreSQL's ([`names`]).
//! * **Queries end.** A query ends when its client cancels it (psql's
//!   Ctrl-C sends a cancel request), when its statement timeout passes
//!   (`SET statement_timeout`, or the server's default), or when its client
//!   goes away: every connection watches its socket, and a hang-up cancels
//!   the connection's query at once, also while it is still computing its
//!   first row (when nothing is being written that would notice). A query
//!   stops at its next step between batches; its memory goes back to the
//!   pool. [`Server::active_queries`] counts what runs. docs/SERVE.md says
//!   how threads are shared and what a query that never yields does.

mod auth;
mod catalog;
mod connection;
mod hooks;
mod names;
mod query;
pub mod readonly;
pub mod settings;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire;
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::tokio::tokio_rustls::rustls;
use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

pub use readonly::{check_statement, Refusal};

use crate::engine::context::Engine;
use crate::error::{Error, Result};

/// The PostgreSQL port most tools assume is taken by a real PostgreSQL; the
/// server's default is the next one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";

/// The user clients log in as when none is configured.
pub const DEFAULT_USER: &str = "supportfunnel";

/// How the server is run.
#[derive(Clone)]
pub struct ServeOptions {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The one user clients log in as.
    pub user: String,
    /// The user's password; `None` trusts every client, which is allowed
    /// on loopback only.
    pub password: Option<String>,
    /// PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1): TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connections served at once; more are turned away.
    pub max_connections: usize,
    /// Time a query may take unless its client sets `statement_timeout`;
    /// `None` for no limit.
    pub statement_timeout: Option<Duration>,
    /// Time a new connection has to log in before it is dropped.
    pub login_timeout: Duration,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("login_timeout", &self.login_timeout)
            .finish()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            user: DEFAULT_USER.into(),
            password: None,
            tls: None,
            max_connections: 64,
            statement_timeout: None,
            login_timeout: Duration::from_secs(10),
        }
    }
}

/// What the command line gave `serve`; unset fields fall back to the
/// config's `[serve]`, then to the defaults.
#[derive(Debug, Clone, Default)]
pub struct ServeFlags {
    /// `--listen HOST:PORT`.
    pub listen: Option<String>,
    /// `--user NAME`.
    pub user: Option<String>,
    /// `--tls-cert FILE`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key FILE`.
    pub tls_key: Option<PathBuf>,
    /// `--max-connections N`.
    pub max_connections: Option<usize>,
    /// `--statement-timeout 5m`.
    pub statement_timeout: Option<String>,
    /// `--login-timeout 10s`.
    pub login_timeout: Option<String>,
}

/// The environment variable the password is read from (never a flag: a
/// flag's value is visible to every user in `ps`).
pub const PASSWORD_ENV: &str = "SUPPORTFUNNEL_PG_PASSWORD";

impl ServeOptions {
    /// Flags over `[serve]` over the defaults; the password from
    /// `env_password` (the value of [`PASSWORD_ENV`]) over the config's.
    pub fn resolve(
        flags: &ServeFlags,
        config: &crate::settings::config::ServeConfig,
        env_password: Option<String>,
    ) -> Result<Self> {
        let d = ServeOptions::default();
        let listen = match flags.listen.as_ref().or(config.listen.as_ref()) {
            Some(l) => parse_listen(l)?,
            None => d.listen,
        };
        let cert = flags.tls_cert.clone().or(config.tls_cert.clone());
        let key = flags.tls_key.clone().or(config.tls_key.clone());
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(Error::usage(
                    "TLS needs both a certificate and a key (--tls-cert and --tls-key, or \
                     [serve] tls_cert and tls_key)",
                ))
            }
        };
        let statement_timeout = match flags
            .statement_timeout
            .as_ref()
            .or(config.statement_timeout.as_ref())
        {
            Some(t) if t.trim() == "0" => None,
            Some(t) => Some(humantime::parse_duration(t.trim()).map_err(|e| {
                Error::usage(format!(
                    "statement timeout `{t}` is not a duration such as 30s or 5m: {e}"
                ))
            })?)
            .filter(|d| !d.is_zero()),
            None => None,
        };
        let login_timeout = match flags
            .login_timeout
            .as_ref()
            .or(config.login_timeout.as_ref())
        {
            Some(t) => humantime::parse_duration(t.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::usage(format!(
                        "login timeout `{t}` is not a duration of more than 0 such as 10s"
                    ))
                })?,
            None => d.login_timeout,
        };
        // An empty password given is a mistake, never a request for no
        // password (which would trust every client).
        let password = match (env_password, &config.password) {
            (Some(p), _) if p.is_empty() => {
                return Err(Error::usage(format!(
                    "${PASSWORD_ENV} is set but empty: set a password, or unset it to serve \
                     without one (loopback only)"
                )))
            }
            (Some(p), _) => Some(p),
            (None, Some(p)) if p.is_empty() => {
                return Err(Error::usage(
                    "[serve] password is empty: set a password, or remove the line to serve \
                     without one (loopback only)",
                ))
            }
            (None, p) => p.clone(),
        };
        Ok(Self {
            listen,
            user: flags.user.clone().or(config.user.clone()).unwrap_or(d.user),
            password,
            tls,
            max_connections: flags
                .max_connections
                .or(config.max_connections)
                .unwrap_or(d.max_connections),
            statement_timeout,
            login_timeout,
        })
    }
}

/// `HOST:PORT`, with a host name resolved (`localhost:5433`).
fn parse_listen(s: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let bad = |why: String| {
        Error::usage(format!(
            "listen address `{s}`: {why} (use HOST:PORT, e.g. 127.0.0.1:5433)"
        ))
    };
    s.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// A connection's (pid, secret key), as its client got them at startup.
type ConnectionKey = (i32, Vec<u8>);

/// Connections not logged in yet, at most, whoever they come from.
const PRELOGIN_MAX: usize = 256;
/// Connections not logged in yet, at most, from one peer address.
const PRELOGIN_PER_PEER: usize = 64;

/// What the server's connections share.
struct Shared {
    base: SessionContext,
    opts: ServeOptions,
    /// The SCRAM verifier of the password: salt and salted password.
    scram: Option<(Vec<u8>, Vec<u8>)>,
    /// The certificate (PEM), for SCRAM channel binding.
    cert_pem: Option<Vec<u8>>,
    /// The running query of each connection, by its (pid, secret key).
    cancels: Mutex<HashMap<ConnectionKey, (u64, CancellationToken)>>,
    /// Logged-in connections: `--max-connections` slots.
    slots: Arc<Semaphore>,
    /// Connections not logged in yet, per peer address.
    prelogin: Mutex<HashMap<IpAddr, usize>>,
    logins: auth::Logins,
    pids: AtomicI32,
    queries: AtomicU64,
    active_queries: AtomicUsize,
    connections: AtomicUsize,
}

impl Shared {
    /// A process id for a new connection (as PostgreSQL's backends have).
    fn next_pid(&self) -> i32 {
        self.pids.fetch_add(1, Ordering::SeqCst) & 0x3fff_ffff
    }

    /// A place for a connection not logged in yet from `ip`; `None` when
    /// there are too many (it is closed at once).
    fn prelogin_place(self: &Arc<Self>, ip: IpAddr) -> Option<Prelogin> {
        let mut waiting = self.prelogin.lock().expect("not poisoned");
        let total: usize = waiting.values().sum();
        let mine = waiting.entry(ip).or_insert(0);
        if total >= PRELOGIN_MAX || *mine >= PRELOGIN_PER_PEER {
            return None;
        }
        *mine += 1;
        Some(Prelogin {
            shared: self.clone(),
            ip,
        })
    }
}

/// A pre-login place; given back when dropped (at login, or when the
/// connection ends).
struct Prelogin {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Prelogin {
    fn drop(&mut self) {
        let mut waiting = self.shared.prelogin.lock().expect("not poisoned");
        if let Some(n) = waiting.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.ip);
            }
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address it listens on (the port the system chose for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries running now (planning, computing or sending rows).
    pub fn active_queries(&self) -> usize {
        self.shared.active_queries.load(Ordering::SeqCst)
    }

    /// Connections open now (logged in or not).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections logged in now.
    pub fn logged_in(&self) -> usize {
        self.shared.opts.max_connections - self.shared.slots.available_permits()
    }

    /// Serves until the task ends (it does not on its own).
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::Internal(format!("the server's task failed: {e}")))
    }

    /// Stops accepting and drops every connection with its work.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Starts serving `engine`'s tables; returns once the port is bound.
pub async fn start(engine: &Engine, opts: ServeOptions) -> Result<Server> {
    if opts.password.is_none() && !opts.listen.ip().is_loopback() {
        return Err(Error::usage(format!(
            "serve without a password trusts every client, so it listens only on a loopback \
             address (127.0.0.1 or ::1), not {}: set $SUPPORTFUNNEL_PG_PASSWORD (or [serve] \
             password) to listen there",
            opts.listen
        )));
    }
    if opts.password.as_deref() == Some("") {
        return Err(Error::usage(
            "the serve password is empty: set a non-empty $SUPPORTFUNNEL_PG_PASSWORD",
        ));
    }
    if opts.max_connections == 0 {
        return Err(Error::usage("--max-connections must be at least 1"));
    }
    let (tls, cert_pem) = match &opts.tls {
        Some((cert, key)) => {
            let (acceptor, pem) = load_tls(cert, key)?;
            (Some(acceptor), Some(pem))
        }
        None => (None, None),
    };
    if tls.is_none() && !opts.listen.ip().is_loopback() {
        log::warn!(
            "serving on {} without TLS: logins are safe (SCRAM), but query text and results \
             travel in the clear; configure --tls-cert and --tls-key",
            opts.listen
        );
    }
    let base = engine.ctx.clone();
    datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(
        &base,
        "datafusion",
        datafusion_postgres::auth::AuthManager::new(),
    )
    .map_err(|e| Error::Internal(format!("pg_catalog: {e}")))?;
    catalog::register(&base, "datafusion")
        .map_err(|e| Error::Internal(format!("pg_catalog: {e}")))?;
    let mut opts = opts;
    // Only the SCRAM verifier is kept, not the password.
    let scram = opts.password.take().map(|p| {
        let salt: [u8; 16] = rand_bytes();
        let salted = gen_salted_password(&p, &salt, SCRAM_ITERATIONS);
        (salt.to_vec(), salted)
    });
    let listener = TcpListener::bind(opts.listen).await.map_err(|e| {
        Error::usage(format!(
            "cannot listen on {}: {e} (is another server using the port? choose one with --listen)",
            opts.listen
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(opts.listen.to_string(), e))?;
    let shared = Arc::new(Shared {
        base,
        slots: Arc::new(Semaphore::new(opts.max_connections)),
        opts,
        scram,
        cert_pem,
        cancels: Mutex::new(Default::default()),
        prelogin: Mutex::new(Default::default()),
        logins: auth::Logins::default(),
        // Distinct from any other server's on the machine, as far as a
        // client can tell.
        pids: AtomicI32::new(i32::from(u16::from_be_bytes(rand_bytes())) << 8),
        active_queries: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        queries: AtomicU64::new(0),
    });
    let stop = Arc::new(Notify::new());
    let task = tokio::spawn(accept_loop(listener, tls, shared.clone(), stop.clone()));
    Ok(Server {
        addr,
        shared,
        stop,
        task,
    })
}

const SCRAM_ITERATIONS: usize = 4096;

/// Random bytes for the SCRAM salt (from the system's generator through
/// the ring provider rustls already uses).
fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut out)
        .expect("the system random generator works");
    out
}

fn load_tls(cert: &PathBuf, key: &PathBuf) -> Result<(TlsAcceptor, Vec<u8>)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = std::fs::read(cert).map_err(|e| Error::io(cert, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::location(cert.display(), format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::location(cert.display(), "holds no PEM certificate"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::location(
            key.display(),
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) could be read: {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| {
            Error::location(
                cert.display(),
                format!("certificate and key do not make a TLS configuration: {e}"),
            )
        })?;
    Ok((TlsAcceptor::from(Arc::new(config)), pem))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.notified() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                log::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(place) = shared.prelogin_place(peer.ip()) else {
            log::warn!(
                "connection from {peer} closed at once: too many connections are logging in \
                 (at most {PRELOGIN_MAX}, {PRELOGIN_PER_PEER} per address)"
            );
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _counted = Counted::new(&shared.connections);
            connection::serve_connection(socket, peer, tls, shared.clone(), place).await;
        });
    }
    connections.shutdown().await;
}

/// Counts one while it lives (also through a panic or an abort).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_resolve_flags_over_config_and_zero_means_no_timeout() {
        let config = crate::settings::config::ServeConfig {
            listen: Some("127.0.0.1:6000".into()),
            user: Some("from_config".into()),
            password: Some("config-pw".into()),
            statement_timeout: Some("5m".into()),
            ..Default::default()
        };
        let flags = ServeFlags {
            user: Some("from_flag".into()),
            statement_timeout: Some("0s".into()),
            ..Default::default()
        };
        let o = ServeOptions::resolve(&flags, &config, Some("env-pw".into())).unwrap();
        assert_eq!(o.listen.to_string(), "127.0.0.1:6000");
        assert_eq!(o.user, "from_flag");
        assert_eq!(o.password.as_deref(), Some("env-pw"));
        assert_eq!(o.statement_timeout, None);
        let o = ServeOptions::resolve(&ServeFlags::default(), &config, None).unwrap();
        assert_eq!(o.password.as_deref(), Some("config-pw"));
        assert_eq!(o.statement_timeout, Some(Duration::from_secs(300)));
        let half_tls = ServeFlags {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(ServeOptions::resolve(&half_tls, &config, None).is_err());
        // an empty password is refused, never taken as "no password"
        let e = ServeOptions::resolve(&ServeFlags::default(), &config, Some(String::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("set but empty"), "{e}");
        let empty_config = crate::settings::config::ServeConfig {
            password: Some(String::new()),
            ..Default::default()
        };
        assert!(ServeOptions::resolve(&ServeFlags::default(), &empty_config, None).is_err());
        assert_eq!(o.login_timeout, Duration::from_secs(10));
        let quick = ServeFlags {
            login_timeout: Some("2s".into()),
            ..Default::default()
        };
        let o = ServeOptions::resolve(&quick, &config, None).unwrap();
        assert_eq!(o.login_timeout, Duration::from_secs(2));
        let zero = ServeFlags {
            login_timeout: Some("0s".into()),
            ..Default::default()
        };
        assert!(ServeOptions::resolve(&zero, &config, None).is_err());
    }

    #[test]
    fn options_never_show_the_password() {
        let opts = ServeOptions {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{opts:?}").contains("hunter2"));
    }
}
