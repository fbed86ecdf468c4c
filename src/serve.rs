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
//! * **Sessions.** Each connection gets a session of its own, copied from
//!   the server's (tables, views, functions, options): what one client's
//!   `SET TIME ZONE` or cursor does is not seen by another. The runtime —
//!   memory pool and spill directory — is shared, so `--memory-limit` holds
//!   for the whole server.
//! * **Queries end.** A query ends when its client cancels it (psql's
//!   Ctrl-C sends a cancel request), when its statement timeout passes
//!   (`SET statement_timeout`, or the server's default), or when its client
//!   goes away: every connection watches its socket, and a hang-up cancels
//!   the connection's query at once, also while it is still computing its
//!   first row (when nothing is being written that would notice). A query
//!   stops at its next step between batches; its memory goes back to the
//!   pool. [`Server::active_queries`] counts what runs. docs/SERVE.md says
//!   how threads are shared and what a query that never yields does.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Query, Reset, Set, SetExpr, Statement};
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, Stream};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ErrorHandler, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::tokio_rustls::rustls;
use pgwire::tokio::TlsAcceptor;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::context::Engine;
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
}

/// The environment variable the password is read from (never a flag: a
/// flag's value is visible to every user in `ps`).
pub const PASSWORD_ENV: &str = "SUPPORTFUNNEL_PG_PASSWORD";

impl ServeOptions {
    /// Flags over `[serve]` over the defaults; the password from
    /// `env_password` (the value of [`PASSWORD_ENV`]) over the config's.
    pub fn resolve(
        flags: &ServeFlags,
        config: &crate::config::ServeConfig,
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
        Ok(Self {
            listen,
            user: flags.user.clone().or(config.user.clone()).unwrap_or(d.user),
            password: env_password
                .filter(|p| !p.is_empty())
                .or(config.password.clone()),
            tls,
            max_connections: flags
                .max_connections
                .or(config.max_connections)
                .unwrap_or(d.max_connections),
            statement_timeout,
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

/// What the server's connections share.
struct Shared {
    base: SessionContext,
    opts: ServeOptions,
    /// The SCRAM verifier of the password: salt and salted password.
    scram: Option<(Vec<u8>, Vec<u8>)>,
    /// The certificate (PEM), for SCRAM channel binding.
    cert_pem: Option<Vec<u8>>,
    /// The running query of each connection, by its (pid, secret key).
    cancels: Mutex<std::collections::HashMap<ConnectionKey, (u64, CancellationToken)>>,
    queries: AtomicU64,
    active_queries: AtomicUsize,
    connections: AtomicUsize,
    sessions: AtomicU64,
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

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
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
        opts,
        scram,
        cert_pem,
        cancels: Mutex::new(Default::default()),
        active_queries: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        sessions: AtomicU64::new(0),
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
    let limiter = Arc::new(Semaphore::new(shared.opts.max_connections));
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
        let permit = limiter.clone().try_acquire_owned().ok();
        let shared = shared.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            // A full server still takes cancel requests (they come on a
            // connection of their own, and matter most when it is busy).
            if permit.is_none() && !is_cancel_request(&socket).await {
                log::warn!(
                    "connection from {peer} turned away: {} connections already \
                     (--max-connections)",
                    shared.opts.max_connections
                );
                return;
            }
            let _permit = permit;
            let _counted = Counted::new(&shared.connections);
            serve_connection(socket, peer, tls, &shared).await;
        });
    }
    connections.shutdown().await;
}

/// Whether the connection opens with a cancel request (length 16, code
/// 80877102), looked at without taking it from the socket.
async fn is_cancel_request(socket: &tokio::net::TcpStream) -> bool {
    let mut head = [0u8; 8];
    let peek = async {
        loop {
            match socket.peek(&mut head).await {
                Ok(n) if n >= 8 => return true,
                Ok(0) | Err(_) => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), peek).await,
        Ok(true)
    ) && head == [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]
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

/// Aborts its task when dropped, so a connection's watcher never outlives
/// it (it holds a duplicate of the socket, which would keep it open).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection: its own session and handlers, until the client leaves
/// or its socket hangs up.
async fn serve_connection(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: &Arc<Shared>,
) {
    let _ = socket.set_nodelay(true);
    let watcher = match hangup_watcher(&socket) {
        Ok(w) => w,
        Err(e) => {
            log::warn!("connection from {peer}: cannot watch its socket: {e}");
            return;
        }
    };
    let n = shared.sessions.fetch_add(1, Ordering::SeqCst);
    let state = SessionStateBuilder::new_from_existing(shared.base.state())
        .with_session_id(format!("pg-{n}"))
        .build();
    let session = Arc::new(SessionContext::new_with_state(state));
    let hung_up = CancellationToken::new();
    let handlers = Arc::new(Handlers::new(session, shared.clone(), hung_up.clone()));
    log::info!("connection {n} from {peer}");
    // A hang-up cancels the query running on the connection (also one
    // still computing its first row, when nothing is written that would
    // notice); the protocol still reads what the client sent before it
    // left (a cancel request, a Terminate) and ends at the end of input.
    let watch = AbortOnDrop(tokio::spawn(async move {
        watcher.await;
        hung_up.cancel();
    }));
    if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
        log::info!("connection {n} from {peer} ended: {e}");
    }
    if watch.0.is_finished() {
        log::info!("connection {n} from {peer}: the client went away");
    }
}

/// Resolves when the peer closes or resets the connection. It watches a
/// duplicate of the socket's descriptor for read-hang-up readiness, so it
/// never takes a byte from the protocol's reader.
fn hangup_watcher(socket: &tokio::net::TcpStream) -> std::io::Result<impl Future<Output = ()>> {
    // SAFETY: the descriptor is open for the duration of this call; the
    // duplicate gets its own descriptor number, owned by the `OwnedFd`.
    let dup =
        unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) }.try_clone_to_owned()?;
    // SAFETY: `dup` is owned by the `AsyncFd` and closed only when it is
    // dropped, after its registration ends.
    let fd = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE)? };
    Ok(async move {
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            if guard.ready().is_read_closed() {
                return;
            }
            // Readable with data the protocol has not read yet (a pipelined
            // message): look again shortly rather than spin.
            guard.clear_ready();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// A connection's handlers.
struct Handlers {
    service: Arc<Service>,
    startup: Arc<Startup>,
    shared: Arc<Shared>,
}

impl Handlers {
    fn new(session: Arc<SessionContext>, shared: Arc<Shared>, hung_up: CancellationToken) -> Self {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnlyHook),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let service = Arc::new(Service {
            inner: DfSessionService::new_with_hooks(session, hooks),
            shared: shared.clone(),
            hung_up,
        });
        let auth = match &shared.scram {
            None => Auth::Trust(TrustStartup),
            Some(_) => {
                let mut scram = ScramAuth::new(Arc::new(OneUser(shared.clone())));
                scram.set_iterations(SCRAM_ITERATIONS);
                if let Some(pem) = &shared.cert_pem {
                    if let Err(e) = scram.configure_certificate(pem) {
                        log::warn!("SCRAM channel binding is off: {e}");
                    }
                }
                let mut params = DefaultServerParameterProvider::default();
                params.default_transaction_read_only = true;
                params.is_superuser = false;
                Auth::Scram(Box::new(
                    SASLAuthStartupHandler::new(Arc::new(params)).with_scram(scram),
                ))
            }
        };
        let startup = Arc::new(Startup {
            tls_required: shared.cert_pem.is_some(),
            auth,
        });
        Self {
            service,
            startup,
            shared,
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(Cancels(self.shared.clone()))
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

/// Logs what a client is told went wrong.
struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        log::info!("{}: {error}", client.socket_addr());
    }
}

/// The password check: one user, one password, as a SCRAM verifier.
#[derive(Clone)]
struct OneUser(Arc<Shared>);

impl std::fmt::Debug for OneUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneUser(<redacted>)")
    }
}

#[async_trait]
impl AuthSource for OneUser {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let (salt, salted) = self.0.scram.clone().expect("SCRAM is configured");
        if login.user() == Some(self.0.opts.user.as_str()) {
            Ok(Password::new(Some(salt), salted))
        } else {
            // Another user name fails exactly as a wrong password does,
            // against a verifier nobody knows.
            let unknown: [u8; 32] = rand_bytes();
            Ok(Password::new(Some(salt), unknown.to_vec()))
        }
    }
}

/// Startup: TLS required when configured (pgwire would otherwise offer
/// SCRAM-SHA-256-PLUS on a plain connection, which clients rightly
/// refuse), then no password (loopback only) or SCRAM.
struct Startup {
    tls_required: bool,
    auth: Auth,
}

enum Auth {
    Trust(TrustStartup),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

struct TrustStartup;

impl NoopStartupHandler for TrustStartup {}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.tls_required
            && matches!(message, PgWireFrontendMessage::Startup(_))
            && !client.is_secure()
        {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "this server takes TLS connections only (sslmode=require)".into(),
            ))));
        }
        match &self.auth {
            Auth::Trust(h) => h.on_startup(client, message).await,
            Auth::Scram(h) => h.on_startup(client, message).await,
        }
    }
}

/// Cancel requests: the pid and secret key a client got at startup name
/// its connection; the query running there ends with SQLSTATE 57014.
struct Cancels(Arc<Shared>);

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let token = self
            .0
            .cancels
            .lock()
            .expect("not poisoned")
            .get(&key)
            .cloned();
        if let Some((_, token)) = token {
            log::info!("cancel request for connection pid {}", request.pid);
            token.cancel();
        }
    }
}

/// A connection's query handlers: datafusion-postgres's, with every
/// result stream watched (cancel, timeout, the count of running queries).
struct Service {
    inner: DfSessionService,
    shared: Arc<Shared>,
    /// Cancelled when the client's socket hangs up.
    hung_up: CancellationToken,
}

impl Service {
    /// Starts watching a query of `client`: counted from now, cancellable
    /// through its connection's key, ended at the statement timeout.
    fn watch<C: ClientInfo + ?Sized>(&self, client: &C) -> Watch {
        let (pid, secret) = client.pid_and_secret_key();
        let key = (pid, secret.to_bytes().to_vec());
        // Cancelled with its connection (the client hung up) too.
        let token = self.hung_up.child_token();
        let id = self.shared.queries.fetch_add(1, Ordering::SeqCst);
        self.shared
            .cancels
            .lock()
            .expect("not poisoned")
            .insert(key.clone(), (id, token.clone()));
        self.shared.active_queries.fetch_add(1, Ordering::SeqCst);
        let timeout = datafusion_postgres_timeout(client).or(self.shared.opts.statement_timeout);
        Watch {
            shared: self.shared.clone(),
            key,
            id,
            token,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        }
    }
}

/// The client's `SET statement_timeout`, as datafusion-postgres keeps it.
fn datafusion_postgres_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Duration> {
    client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// One running query: its cancel token and deadline; counted until dropped.
struct Watch {
    shared: Arc<Shared>,
    key: ConnectionKey,
    id: u64,
    token: CancellationToken,
    /// When the statement timeout ends it.
    deadline: Option<tokio::time::Instant>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut cancels = self.shared.cancels.lock().expect("not poisoned");
        // Only this query's entry: a later query of the connection has
        // put its own in place.
        if cancels.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            cancels.remove(&self.key);
        }
        drop(cancels);
        self.shared.active_queries.fetch_sub(1, Ordering::SeqCst);
    }
}

fn canceled() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "57014".into(),
        "canceling statement due to user request".into(),
    )))
}

fn timed_out() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "57014".into(),
        "canceling statement due to statement timeout".into(),
    )))
}

/// Runs `work` under `watch`: ends early on cancel or timeout.
async fn watched<T>(watch: &Watch, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
    let sleep = async {
        match watch.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = watch.token.cancelled() => Err(canceled()),
        _ = sleep => Err(timed_out()),
    }
}

/// Wraps the row streams of `responses` so that the watch lives (and the
/// query can be cancelled or time out) until the last row is sent.
fn watch_rows(response: Response, watch: &Arc<Watch>) -> Response {
    match response {
        Response::Query(mut q) => {
            let tag = q.command_tag().to_string();
            let inner = std::mem::replace(q.data_rows(), Box::pin(futures::stream::empty()));
            let mut watched = QueryResponse::new(
                q.row_schema(),
                WatchedRows {
                    inner,
                    cancelled: Box::pin(watch.token.clone().cancelled_owned()),
                    deadline: watch
                        .deadline
                        .map(|d| Box::pin(tokio::time::sleep_until(d))),
                    _watch: watch.clone(),
                    done: false,
                },
            );
            watched.set_command_tag(&tag);
            Response::Query(watched)
        }
        other => other,
    }
}

/// A row stream that ends with an error when its query is cancelled or
/// times out, and keeps the query counted while it lives.
struct WatchedRows {
    inner: Pin<Box<dyn Stream<Item = PgWireResult<DataRow>> + Send>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _watch: Arc<Watch>,
    done: bool,
}

impl Stream for WatchedRows {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(canceled())));
        }
        if let Some(d) = self.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                self.done = true;
                return Poll::Ready(Some(Err(timed_out())));
            }
        }
        self.inner.as_mut().poll_next(cx)
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let watch = Arc::new(self.watch(client));
        let responses = watched(
            &watch,
            SimpleQueryHandler::do_query(&self.inner, client, query),
        )
        .await?;
        Ok(responses
            .into_iter()
            .map(|r| watch_rows(r, &watch))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner.query_parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let watch = Arc::new(self.watch(client));
        let response = watched(
            &watch,
            ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows),
        )
        .await?;
        Ok(watch_rows(response, &watch))
    }
}

/// Refuses every statement that is not read-only, first among the hooks.
struct ReadOnlyHook;

fn refused(e: Refusal) -> PgWireError {
    let (code, message) = match e {
        Refusal::Write(what) => (
            "25006",
            format!(
                "supportfunnel serve is read-only: {what} is refused \
                 (SELECT, EXPLAIN, SHOW, cursors, transactions and SET of session settings run)"
            ),
        ),
        Refusal::EngineOption(name) => (
            "42501",
            format!(
                "supportfunnel serve: engine option `{name}` cannot be changed by a client; \
                 the server's [datafusion] options hold for every connection"
            ),
        ),
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

/// Answers the session statements DataFusion has no plan for (savepoints,
/// `DISCARD`, `RESET` of a session setting), which tools and poolers send,
/// and makes `SET TIME ZONE` change the session's zone (datafusion-postgres
/// only reports it). `None`: the statement goes on to the next hook.
fn answer_session_statement(
    statement: &Statement,
    session: &SessionContext,
    client: &mut (dyn ClientInfo + Send + Sync),
) -> Option<PgWireResult<Response>> {
    let tag = |t: &str| Some(Ok(Response::Execution(Tag::new(t))));
    match statement {
        Statement::Savepoint { .. } => tag("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => tag("RELEASE"),
        Statement::Discard { .. } => {
            reset_setting(session, client, None);
            tag("DISCARD ALL")
        }
        Statement::Reset(r) => {
            match &r.reset {
                Reset::ALL => reset_setting(session, client, None),
                Reset::ConfigurationParameter(name) => {
                    reset_setting(session, client, Some(&name.to_string().to_lowercase()))
                }
            }
            tag("RESET")
        }
        Statement::Set(Set::SetTimeZone { value, .. }) => {
            let zone = value.to_string();
            let zone = zone.trim_matches(|c| c == '\'' || c == '"');
            session
                .state_ref()
                .write()
                .config_mut()
                .options_mut()
                .execution
                .time_zone = Some(zone.to_string());
            None
        }
        _ => None,
    }
}

/// Forgets one session setting of the client (all with `None`).
fn reset_setting(
    session: &SessionContext,
    client: &mut (dyn ClientInfo + Send + Sync),
    name: Option<&str>,
) {
    let meta = client.metadata_mut();
    match name {
        Some("statement_timeout") => {
            meta.remove("statement_timeout_ms");
        }
        Some("timezone" | "time zone") | None => {
            meta.remove("timezone");
            session
                .state_ref()
                .write()
                .config_mut()
                .options_mut()
                .execution
                .time_zone = None;
            if name.is_none() {
                meta.remove("statement_timeout_ms");
            }
        }
        Some(other) => {
            meta.remove(other);
        }
    }
}

fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Err(e) = check_statement(statement) {
            return Some(Err(refused(e)));
        }
        answer_session_statement(statement, session_context, client)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Err(e) = check_statement(statement) {
            return Some(Err(refused(e)));
        }
        match statement {
            Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Discard { .. }
            | Statement::Reset(_) => Some(Ok(empty_plan())),
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        _params: &ParamValues,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Err(e) = check_statement(statement) {
            return Some(Err(refused(e)));
        }
        if let Some(answer) = answer_session_statement(statement, session_context, client) {
            return Some(answer);
        }
        // The plan too, whatever the statement looked like.
        if matches!(
            logical_plan,
            LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
        ) {
            return Some(Err(refused(Refusal::Write(first_words(statement)))));
        }
        None
    }
}

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It writes or defines something: the statement's first words.
    Write(String),
    /// It changes an engine option: the option's name.
    EngineOption(String),
}

/// Whether `statement` may run on the read-only server (module docs).
pub fn check_statement(statement: &Statement) -> std::result::Result<(), Refusal> {
    match statement {
        Statement::Query(q) => check_query(q),
        Statement::Declare { stmts } => stmts
            .iter()
            .filter_map(|d| d.for_query.as_deref())
            .try_for_each(check_query),
        Statement::ExplainTable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Deallocate { .. }
        | Statement::Execute { .. }
        | Statement::Discard { .. } => Ok(()),
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            check_statement(statement)
        }
        Statement::Set(set) => check_set(set),
        Statement::Reset(reset) => match &reset.reset {
            Reset::ConfigurationParameter(name) if name.to_string().contains('.') => {
                Err(Refusal::EngineOption(name.to_string()))
            }
            _ => Ok(()),
        },
        other => Err(Refusal::Write(first_words(other))),
    }
}

/// A query writes when a `SELECT … INTO t` (DataFusion: a new table) or a
/// data-modifying statement hides in it, at any depth of its set
/// operations and CTEs.
fn check_query(q: &Query) -> std::result::Result<(), Refusal> {
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            check_query(&cte.query)?;
        }
    }
    check_set_expr(&q.body)
}

fn check_set_expr(e: &SetExpr) -> std::result::Result<(), Refusal> {
    match e {
        SetExpr::Select(select) if select.into.is_some() => {
            Err(Refusal::Write("SELECT … INTO".into()))
        }
        SetExpr::Query(q) => check_query(q),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            Err(Refusal::Write(first_words(s)))
        }
        _ => Ok(()),
    }
}

fn check_set(set: &Set) -> std::result::Result<(), Refusal> {
    let dotted = |name: String| {
        if name.contains('.') {
            Err(Refusal::EngineOption(name))
        } else {
            Ok(())
        }
    };
    match set {
        Set::SingleAssignment { variable, .. } => dotted(variable.to_string()),
        Set::ParenthesizedAssignments { variables, .. } => {
            variables.iter().try_for_each(|v| dotted(v.to_string()))
        }
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .try_for_each(|a| dotted(a.name.to_string())),
        _ => Ok(()),
    }
}

/// `CREATE TABLE`, `COPY`, `INSERT INTO`: the statement's leading keywords.
fn first_words(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic() || c == '_'))
        .take(2)
        .collect();
    if words.is_empty() {
        "this statement".into()
    } else {
        words.join(" ").to_uppercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn check(sql: &str) -> std::result::Result<(), Refusal> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        check_statement(&statements[0])
    }

    #[test]
    fn reads_run_and_writes_are_refused() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT * FROM sessions",
            "SHOW TABLES",
            "SHOW TIME ZONE",
            "SET statement_timeout = 1000",
            "SET TIME ZONE 'UTC'",
            "SET extra_float_digits = 3",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 10 FROM c",
            "CLOSE c",
            "PREPARE p AS SELECT $1",
            "DISCARD ALL",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (sql, what) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE events", "DROP TABLE"),
            ("INSERT INTO events VALUES (1)", "INSERT INTO"),
            ("DELETE FROM events", "DELETE FROM"),
            ("UPDATE events SET a = 1", "UPDATE EVENTS"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("EXPLAIN INSERT INTO t VALUES (1)", "INSERT INTO"),
            ("PREPARE p AS INSERT INTO t VALUES ($1)", "INSERT INTO"),
            ("SELECT 1 INTO t", "SELECT … INTO"),
            ("SELECT 1 UNION SELECT 2 INTO t", "SELECT … INTO"),
            ("EXPLAIN SELECT 1 INTO t", "SELECT … INTO"),
            ("DECLARE c CURSOR FOR SELECT 1 INTO t", "SELECT … INTO"),
        ] {
            assert_eq!(check(sql), Err(Refusal::Write(what.into())), "{sql}");
        }
        assert_eq!(
            check("SET datafusion.execution.target_partitions = 64"),
            Err(Refusal::EngineOption(
                "datafusion.execution.target_partitions".into()
            ))
        );
        assert!(matches!(
            check("RESET datafusion.execution.batch_size"),
            Err(Refusal::EngineOption(_))
        ));
    }

    #[test]
    fn settings_resolve_flags_over_config_and_zero_means_no_timeout() {
        let config = crate::config::ServeConfig {
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
