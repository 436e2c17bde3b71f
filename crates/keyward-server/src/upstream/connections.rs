//! The gateway's keep-alive connections to one upstream base URL, each driven by the request
//! that is using it.
//!
//! Why not hyper-util's pooled client (what this replaced): it runs each connection as a task
//! of its own and hands it every request through a channel, and after each answer it spawns
//! one more task that puts the connection back once the body has been read. Per forwarded
//! request that was two wake-ups across tasks, a task spawned, a pool lookup keyed by a cloned
//! scheme and authority, and the `Host` header formatted again. Here the request's own task
//! writes the request, reads the answer and streams its body back, polling the connection as
//! it goes; the pool is a stack of idle connections.
//!
//! A connection goes back to the pool only when its answer's body has been read to the end;
//! one dropped earlier (the client went away) is closed. An idle connection is not polled, so
//! an upstream that closed it is noticed when it is next taken, and it is then dropped for
//! another. A request that found its reused connection closed before it was written is sent
//! again on another (it never reached the upstream); one that may have reached it is not.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// How long a connection may wait idle in the pool (the upstream may close it sooner).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept; more are closed when put back.
const MAX_IDLE: usize = 256;

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, the connect timeout, TLS).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// A new connection closed before it could take the request.
    Closed,
    /// The connection failed while the request was sent or its answer read.
    Exchange(hyper::Error),
}

/// One HTTP/1.1 connection: the handle that sends on it, and the state machine that does its
/// reading and writing, polled by whoever holds the connection.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Pin<Box<http1::Connection<Io, Full<Bytes>>>>,
    /// The driver has finished: the connection is closed and must not be polled again.
    closed: bool,
    /// Served a request before (so a request it cannot take may be sent again elsewhere).
    reused: bool,
    idle_since: Instant,
}

impl Connection {
    /// Lets the connection read and write what it can.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.closed && self.driver.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
    }

    /// Ready for a request (`true`), or closed (`false`).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.drive(cx);
        if self.closed {
            return Poll::Ready(false);
        }
        self.sender.poll_ready(cx).map(|ready| ready.is_ok())
    }
}

/// The idle connections to one base URL, and how to open another.
pub struct Connections {
    /// The base URL's scheme and authority, which the connector dials.
    address: hyper::Uri,
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Vec<Connection>>,
}

impl Connections {
    pub fn new(address: hyper::Uri, connector: HttpsConnector<HttpConnector>) -> Arc<Self> {
        Arc::new(Self {
            address,
            connector,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` (origin-form URI, `Host` set) and returns the answer once its head has
    /// arrived; its body streams from the same connection as it is read.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let mut connection = match self.take_idle() {
                Some(idle) => idle,
                None => self.open().await?,
            };
            if !poll_fn(|cx| connection.poll_ready(cx)).await {
                if connection.reused {
                    continue; // closed by the upstream while idle: try another
                }
                return Err(SendError::Closed);
            }
            let mut answer = Box::pin(connection.sender.try_send_request(request));
            let answered = poll_fn(|cx| {
                connection.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match answered {
                Ok(response) => {
                    connection.reused = true;
                    let (head, body) = response.into_parts();
                    let mut body = UpstreamBody {
                        body,
                        connection: Some(connection),
                        pool: self.clone(),
                    };
                    // An empty body is never polled: the connection is free already.
                    body.release_if_ended();
                    return Ok(Response::from_parts(head, body));
                }
                Err(mut refused) => match refused.take_message() {
                    // Never written: the reused connection had closed. Another one.
                    Some(unsent) if connection.reused => request = unsent,
                    _ => return Err(SendError::Exchange(refused.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection, dropping any that waited too long.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let connection = idle.pop()?;
        if connection.idle_since.elapsed() <= IDLE_TIMEOUT {
            return Some(connection);
        }
        // This was the newest: every other one is older still. They are closed once the
        // lock is released.
        let stale = std::mem::take(&mut *idle);
        drop(idle);
        drop((connection, stale));
        None
    }

    fn put_idle(&self, mut connection: Connection) {
        if connection.closed {
            return;
        }
        connection.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    async fn open(&self) -> Result<Connection, SendError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.address.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, driver) = http1::handshake(io).await.map_err(SendError::Exchange)?;
        Ok(Connection {
            sender,
            driver: Box::pin(driver),
            closed: false,
            reused: false,
            idle_since: Instant::now(),
        })
    }
}

pin_project_lite::pin_project! {
    /// The upstream's answer body, streamed as the client reads it, polling the connection it
    /// arrives on; at its end the connection goes back to the pool.
    pub struct UpstreamBody {
        #[pin]
        body: Incoming,
        connection: Option<Connection>,
        pool: Arc<Connections>,
    }
}

impl UpstreamBody {
    fn release_if_ended(&mut self) {
        if self.body.is_end_stream() {
            if let Some(connection) = self.connection.take() {
                self.pool.put_idle(connection);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        if let Some(connection) = this.connection.as_mut() {
            connection.drive(cx);
        }
        let frame = std::task::ready!(this.body.as_mut().poll_frame(cx));
        let ended = match &frame {
            None => true,
            Some(Ok(_)) => this.body.is_end_stream(),
            Some(Err(_)) => {
                *this.connection = None; // broken mid-answer: closed, not reused
                false
            }
        };
        if ended {
            if let Some(connection) = this.connection.take() {
                this.pool.put_idle(connection);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
