//! SMTP delivery over a small pool of reused connections, with `TCP_NODELAY`.
//!
//! Why not lettre's own pooled transport: it never sets `TCP_NODELAY`, and it writes a
//! message's body and then the `\r\n.\r\n` that ends it as two separate writes without reading
//! in between. Nagle's algorithm holds the small second write until the first is acknowledged,
//! and the server delays that acknowledgement (delayed ACK, 40 ms on Linux) because it is
//! waiting for more data: every email cost ~43 ms of waiting, whatever the server (measured
//! with strace in `docs/benchmarks.md`). lettre also sends a `NOOP` before each reuse. Here
//! each connection is opened by us with `TCP_NODELAY` set and handed to lettre's SMTP client
//! (which still does the protocol: EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA), at most
//! `concurrency` are busy at once, and an idle one is checked with `NOOP` only when it has
//! been idle a while.

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Connections idle longer than this are checked with `NOOP` before reuse...
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);
/// ...and closed rather than reused after this (servers drop idle clients after a minute or
/// more; RFC 5321 §4.5.3.2.7 suggests 5 minutes).
const MAX_IDLE: Duration = Duration::from_secs(50);

/// How the connection is protected.
#[derive(Clone)]
pub enum TlsMode {
    None,
    /// `STARTTLS`, required: a server without it is an error.
    StartTls(TlsParameters),
    /// `STARTTLS` when the server offers it.
    Opportunistic(TlsParameters),
    /// Implicit TLS (`smtps://`, port 465). lettre opens these connections itself, so they
    /// run without `TCP_NODELAY` (see `docs/deployment.md`).
    Wrapper(TlsParameters),
}

/// Where and how to send.
#[derive(Clone)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<Credentials>,
    /// For connecting and for each whole transaction.
    pub timeout: Duration,
}

struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
}

/// The pool: at most `concurrency` transactions at once, idle connections kept for reuse.
pub struct SmtpPool {
    target: SmtpTarget,
    hello: ClientId,
    slots: Semaphore,
    idle: Mutex<Vec<Idle>>,
}

/// Why a transaction failed; the outbox retries every kind with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SmtpError(String);

impl SmtpPool {
    pub fn new(target: SmtpTarget, concurrency: usize) -> Self {
        Self {
            target,
            hello: ClientId::default(),
            slots: Semaphore::new(concurrency.max(1)),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// One SMTP transaction (MAIL, RCPT, DATA) on a pooled or new connection.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SmtpError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SmtpError("the mail pool is closed".into()))?;
        let mut connection = match self.reusable().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let sent = tokio::time::timeout(self.target.timeout, connection.send(envelope, message))
            .await
            .map_err(|_| SmtpError("the mail server did not answer in time".into()))
            .and_then(|r| r.map_err(|e| SmtpError(e.to_string())));
        match sent {
            Ok(_) => {
                self.put_back(connection);
                Ok(())
            }
            // A refused transaction may leave the connection usable, but lettre marks it
            // broken on any error; a fresh one is cheap.
            Err(e) => Err(e),
        }
    }

    fn take_idle(&self) -> Option<Idle> {
        self.idle.lock().ok()?.pop()
    }

    /// An idle connection that still works, if any.
    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        while let Some(Idle {
            mut connection,
            since,
        }) = self.take_idle()
        {
            let idle = since.elapsed();
            if idle > MAX_IDLE {
                let _ = connection.quit().await;
                continue;
            }
            if idle > CHECK_AFTER_IDLE && !connection.test_connected().await {
                continue;
            }
            return Some(connection);
        }
        None
    }

    fn put_back(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let target = &self.target;
        let connecting = async {
            let mut connection = match &target.tls {
                TlsMode::Wrapper(tls) => AsyncSmtpConnection::connect_tokio1(
                    (target.host.as_str(), target.port),
                    Some(target.timeout),
                    &self.hello,
                    Some(tls.clone()),
                    None,
                )
                .await
                .map_err(|e| SmtpError(e.to_string()))?,
                _ => {
                    let stream =
                        tokio::net::TcpStream::connect((target.host.as_str(), target.port))
                            .await
                            .map_err(|e| SmtpError(format!("could not connect: {e}")))?;
                    stream
                        .set_nodelay(true)
                        .map_err(|e| SmtpError(format!("could not set TCP_NODELAY: {e}")))?;
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                        .await
                        .map_err(|e| SmtpError(e.to_string()))?
                }
            };
            match &target.tls {
                TlsMode::StartTls(tls) => connection
                    .starttls(tls.clone(), &self.hello)
                    .await
                    .map_err(|e| SmtpError(format!("STARTTLS: {e}")))?,
                TlsMode::Opportunistic(tls) if connection.can_starttls() => connection
                    .starttls(tls.clone(), &self.hello)
                    .await
                    .map_err(|e| SmtpError(format!("STARTTLS: {e}")))?,
                _ => {}
            }
            if let Some(credentials) = &target.credentials {
                connection
                    .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(|e| SmtpError(format!("authentication: {e}")))?;
            }
            Ok(connection)
        };
        tokio::time::timeout(target.timeout, connecting)
            .await
            .map_err(|_| SmtpError("connecting to the mail server timed out".into()))?
    }
}
