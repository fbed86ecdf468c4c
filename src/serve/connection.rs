//! One client connection, from the first byte to the last.
//!
//! Before login a connection holds only a *pre-login* place (a limit of its
//! own, and per peer address), never one of the `--max-connections` slots,
//! and it has [`super::ServeOptions::login_timeout`] to log in; a client
//! that sends nothing, or too slowly, is dropped then. A message that cannot
//! be decoded (a malformed startup packet, garbage) gets a FATAL
//! ErrorResponse before the connection is closed. The protocol itself is
//! pgwire's, message by message.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{SinkExt, StreamExt};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use pgwire::tokio::TlsAcceptor;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio_util::sync::CancellationToken;

use super::auth::Startup;
use super::hooks::ServeHook;
use super::query::{OneStatementParser, Service};
use super::Shared;

/// Aborts its task when dropped, so a connection's watcher never outlives
/// it (it holds a duplicate of the socket, which would keep it open).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves one accepted socket until the client leaves, its socket hangs
/// up, or it fails to log in in time. `prelogin` is its pre-login place,
/// given back at login.
pub(super) async fn serve_connection(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    prelogin: impl Send + 'static,
) {
    let _ = socket.set_nodelay(true);
    let watcher = match hangup_watcher(&socket) {
        Ok(w) => w,
        Err(e) => {
            log::warn!("connection from {peer}: cannot watch its socket: {e}");
            return;
        }
    };
    let pid = shared.next_pid();
    let session = match crate::engine::context::fork_session(&shared.base, format!("pg-{pid}")) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::warn!("connection from {peer}: cannot start its session: {e}");
            return;
        }
    };
    let hung_up = CancellationToken::new();
    let handlers = Arc::new(Handlers::new(
        session,
        shared.clone(),
        hung_up.clone(),
        peer,
        pid,
    ));
    // A hang-up cancels the query running on the connection (also one
    // still computing its first row, when nothing is written that would
    // notice); the protocol still reads what the client sent before it
    // left (a cancel request, a Terminate) and ends at the end of input.
    let watch = AbortOnDrop(tokio::spawn(async move {
        watcher.await;
        hung_up.cancel();
    }));
    let logged_in = handlers.startup.logged_in.clone();
    let login_timeout = shared.opts.login_timeout;
    let result = process(socket, tls, handlers, login_timeout, prelogin).await;
    match result {
        Ok(Ending::LoginTimeout) => log::info!(
            "connection from {peer} closed: no login within {}s",
            login_timeout.as_secs_f64()
        ),
        Ok(Ending::Closed) => {}
        Err(e) => log::info!("connection pid {pid} from {peer} ended: {e}"),
    }
    if watch.0.is_finished() && logged_in.is_cancelled() {
        log::info!("connection pid {pid} from {peer}: the client went away");
    }
}

/// How a connection ended without an I/O error.
enum Ending {
    Closed,
    LoginTimeout,
}

/// The message loop (pgwire's `process_socket`, with the login timeout,
/// the pre-login place and an ErrorResponse for what cannot be decoded).
async fn process(
    socket: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Arc<Handlers>,
    login_timeout: Duration,
    prelogin: impl Send,
) -> std::io::Result<Ending> {
    let deadline = tokio::time::sleep(login_timeout);
    tokio::pin!(deadline);
    let negotiated = tokio::select! {
        _ = &mut deadline => return Ok(Ending::LoginTimeout),
        s = negotiate_tls::<<Service as ExtendedQueryHandler>::Statement>(socket, tls) => s?,
    };
    // A direct TLS handshake with no TLS configured.
    let Some(mut socket) = negotiated else {
        return Ok(Ending::Closed);
    };
    let startup = handlers.startup.clone();
    let simple = handlers.service.clone();
    let extended = handlers.service.clone();
    let copy = Arc::new(pgwire::api::NoopHandler);
    let cancel = Arc::new(Cancels(handlers.shared.clone()));
    let errors = LogErrors;
    let mut prelogin = Some(prelogin);
    loop {
        let logging_in = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        if !logging_in {
            // Logged in: the pre-login place goes back.
            prelogin.take();
        }
        let message = if logging_in {
            tokio::select! {
                _ = &mut deadline => return Ok(Ending::LoginTimeout),
                m = socket.next() => m,
            }
        } else {
            socket.next().await
        };
        let message = match message {
            None => return Ok(Ending::Closed),
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // The framing is lost: say why, then close.
                let what = if logging_in {
                    "invalid startup packet"
                } else {
                    "invalid message"
                };
                let info = ErrorInfo::new("FATAL".into(), "08P01".into(), format!("{what}: {e}"));
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await;
                return Ok(Ending::Closed);
            }
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(Ending::Closed);
        }
        let is_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            let fatal = matches!(&e, PgWireError::UserError(info) if info.severity == "FATAL");
            process_error(&mut socket, e, is_extended).await?;
            // A login that failed, or any FATAL error, ends the connection:
            // pgwire would go on reading, as if the client were logged in.
            if logging_in || fatal {
                return Ok(Ending::Closed);
            }
        }
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
pub(super) struct Handlers {
    service: Arc<Service>,
    startup: Arc<Startup>,
    shared: Arc<Shared>,
}

impl Handlers {
    fn new(
        session: Arc<datafusion::prelude::SessionContext>,
        shared: Arc<Shared>,
        hung_up: CancellationToken,
        peer: SocketAddr,
        pid: i32,
    ) -> Self {
        // `pg_backend_pid()` says which connection this is, as the pid in
        // a cancel request does.
        session.register_udf(datafusion::logical_expr::create_udf(
            "pg_backend_pid",
            vec![],
            datafusion::arrow::datatypes::DataType::Int32,
            datafusion::logical_expr::Volatility::Stable,
            Arc::new(move |_| {
                Ok(datafusion::logical_expr::ColumnarValue::Scalar(
                    datafusion::common::ScalarValue::Int32(Some(pid)),
                ))
            }),
        ));
        let default_zone = session
            .state()
            .config()
            .options()
            .execution
            .time_zone
            .clone();
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ServeHook::new(
                shared.opts.statement_timeout,
                default_zone.clone(),
            )),
            Arc::new(CursorStatementHook),
            // Only SHOW CATALOGS and the like reach it: every SET and SHOW
            // of a setting is answered by ServeHook.
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let inner = DfSessionService::new_with_hooks(Arc::clone(&session), hooks);
        let parser = Arc::new(OneStatementParser {
            inner: inner.query_parser(),
        });
        let service = Arc::new(Service {
            inner,
            session,
            parser,
            shared: shared.clone(),
            hung_up,
            default_zone,
        });
        Self {
            service,
            startup: Arc::new(Startup::new(shared.clone(), peer, pid)),
            shared,
        }
    }
}

/// Logs what a client is told went wrong (failed logins are logged, at
/// WARN, by [`Startup`]).
struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        log::info!(
            "{} (pid {}): {error}",
            client.socket_addr(),
            client.pid_and_secret_key().0
        );
    }
}

/// Cancel requests: the pid and secret key a client got at startup name
/// its connection; the query running there ends with SQLSTATE 57014.
struct Cancels(Arc<Shared>);

#[async_trait::async_trait]
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
