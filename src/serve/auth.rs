//! Logging in to `serve`: TLS required when configured, then no password
//! (loopback only) or SCRAM-SHA-256; a connection slot taken at the moment
//! of login (never before, so silent sockets hold none); a back-off for a
//! peer whose logins fail, and a warning naming peer and user; a process id
//! of its own for each connection; the startup packet's settings checked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::Sink;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, AuthSource,
    LoginInfo, Password, ServerParameterProvider, StartupHandler,
};
use pgwire::api::{ClientInfo, PgWireConnectionState, PidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, ProtocolVersion};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{rand_bytes, settings, Shared, SCRAM_ITERATIONS};

/// Failed logins remembered per peer address, for the back-off.
#[derive(Default)]
pub(super) struct Logins {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures are forgotten this long after the last one.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// The longest wait before a peer's next login is answered.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Logins {
    /// How long a login from `ip` waits before it is answered: nothing
    /// after no failure, then 100 ms doubling per failure up to
    /// [`MAX_BACKOFF`].
    pub(super) fn delay(&self, ip: IpAddr) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        failures.retain(|_, (_, last)| last.elapsed() < FORGET_AFTER);
        match failures.get(&ip) {
            None => Duration::ZERO,
            Some((n, _)) => {
                let shift = (*n).saturating_sub(1).min(6);
                (Duration::from_millis(100) * (1 << shift)).min(MAX_BACKOFF)
            }
        }
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().expect("not poisoned");
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
    }

    fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().expect("not poisoned").remove(&ip);
    }
}

/// The password check: one user, one password, as a SCRAM verifier.
#[derive(Clone)]
pub(super) struct OneUser(pub(super) Arc<Shared>);

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

/// The connection's own process id, with a random secret key: what a
/// cancel request names.
struct ConnectionKey(i32);

impl PidSecretKeyGenerator for ConnectionKey {
    fn generate(&self, client: &dyn ClientInfo) -> (i32, SecretKey) {
        let key = match client.protocol_version() {
            ProtocolVersion::PROTOCOL3_0 => SecretKey::I32(i32::from_be_bytes(rand_bytes::<4>())),
            _ => SecretKey::Bytes(rand_bytes::<32>().to_vec().into()),
        };
        (self.0, key)
    }
}

/// The parameters a client is told at login ([`settings::startup_parameters`]).
#[derive(Debug)]
pub(super) struct Parameters;

impl ServerParameterProvider for Parameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        Some(settings::startup_parameters(client).into_iter().collect())
    }
}

/// Startup of one connection: TLS required when configured (pgwire would
/// otherwise offer SCRAM-SHA-256-PLUS on a plain connection, which clients
/// rightly refuse), the back-off, the settings of the startup packet, the
/// connection slot, then no password (loopback only) or SCRAM.
pub(super) struct Startup {
    shared: Arc<Shared>,
    peer: SocketAddr,
    pid: i32,
    tls_required: bool,
    scram: Option<Box<SASLAuthStartupHandler<Parameters>>>,
    /// Password messages seen: SCRAM's second one completes the login.
    password_messages: AtomicUsize,
    /// The connection slot, taken at login, held until the connection ends.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Cancelled once the client is logged in.
    pub(super) logged_in: CancellationToken,
}

impl Startup {
    pub(super) fn new(shared: Arc<Shared>, peer: SocketAddr, pid: i32) -> Self {
        let scram = shared.scram.as_ref().map(|_| {
            let mut scram = ScramAuth::new(Arc::new(OneUser(shared.clone())));
            scram.set_iterations(SCRAM_ITERATIONS);
            if let Some(pem) = &shared.cert_pem {
                if let Err(e) = scram.configure_certificate(pem) {
                    log::warn!("SCRAM channel binding is off: {e}");
                }
            }
            Box::new(
                SASLAuthStartupHandler::new(Arc::new(Parameters))
                    .with_scram(scram)
                    .with_pid_secret_key_generator(Arc::new(ConnectionKey(pid))),
            )
        });
        Self {
            tls_required: shared.cert_pem.is_some(),
            shared,
            peer,
            pid,
            scram,
            password_messages: AtomicUsize::new(0),
            slot: Mutex::new(None),
            logged_in: CancellationToken::new(),
        }
    }

    /// Takes a connection slot for the login being completed, or refuses it
    /// as PostgreSQL does when full (53300).
    fn take_slot(&self) -> PgWireResult<()> {
        let mut slot = self.slot.lock().expect("not poisoned");
        if slot.is_some() {
            return Ok(());
        }
        match self.shared.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                *slot = Some(permit);
                Ok(())
            }
            Err(_) => {
                log::warn!(
                    "login from {} turned away: {} clients already (--max-connections)",
                    self.peer,
                    self.shared.opts.max_connections
                );
                Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".into(),
                    "53300".into(),
                    "sorry, too many clients already".into(),
                ))))
            }
        }
    }

    async fn startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            if self.tls_required && !client.is_secure() {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".into(),
                    "28000".into(),
                    "this server takes TLS connections only (sslmode=require)".into(),
                ))));
            }
            let wait = self.shared.logins.delay(self.peer.ip());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if self.scram.is_none() {
                // No password: the startup packet is the whole login.
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                settings::apply_startup(client)?;
                self.take_slot()?;
                let (pid, key) = ConnectionKey(self.pid).generate(client);
                client.set_pid_and_secret_key(pid, key);
                return finish_authentication(client, &Parameters).await;
            }
        }
        let Some(scram) = &self.scram else {
            return Ok(());
        };
        let is_startup = matches!(message, PgWireFrontendMessage::Startup(_));
        if let PgWireFrontendMessage::PasswordMessageFamily(_) = &message {
            // SCRAM's second client message completes the login.
            if self.password_messages.fetch_add(1, Ordering::SeqCst) == 1 {
                self.take_slot()?;
            }
        }
        scram.on_startup(client, message).await?;
        if is_startup {
            settings::apply_startup(client)?;
        }
        Ok(())
    }
}

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
        let in_password_exchange = matches!(
            client.state(),
            PgWireConnectionState::AuthenticationInProgress
        );
        let result = self.startup(client, message).await;
        match &result {
            Ok(()) if matches!(client.state(), PgWireConnectionState::ReadyForQuery) => {
                self.shared.logins.succeeded(self.peer.ip());
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                log::info!(
                    "connection pid {} from {}: logged in as {user:?}",
                    self.pid,
                    self.peer
                );
                self.logged_in.cancel();
            }
            Ok(()) => {}
            Err(e) => {
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let password = in_password_exchange
                    || matches!(
                        e,
                        PgWireError::InvalidPassword(_) | PgWireError::InvalidScramMessage(_)
                    );
                if password {
                    self.shared.logins.failed(self.peer.ip());
                }
                log::warn!(
                    "login failed from {} as user {user:?}: {e}{}",
                    self.peer,
                    if password {
                        " (the peer's next logins are answered more slowly)"
                    } else {
                        ""
                    }
                );
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_slow_their_peer_down_and_success_forgives() {
        let logins = Logins::default();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        assert_eq!(logins.delay(ip), Duration::ZERO);
        logins.failed(ip);
        assert_eq!(logins.delay(ip), Duration::from_millis(100));
        logins.failed(ip);
        logins.failed(ip);
        assert_eq!(logins.delay(ip), Duration::from_millis(400));
        for _ in 0..20 {
            logins.failed(ip);
        }
        assert_eq!(logins.delay(ip), MAX_BACKOFF);
        assert_eq!(logins.delay(other), Duration::ZERO, "per peer");
        logins.succeeded(ip);
        assert_eq!(logins.delay(ip), Duration::ZERO);
    }
}
