//! Serving one listener, with what protects it from slow and idle clients: every connection
//! must send its request headers within a deadline (which also closes keep-alive connections
//! left idle), a request body must arrive whole within a deadline, and at most so many
//! connections are open at once: past the cap, a new connection gets a short 503 envelope and
//! is closed, instead of waiting in the kernel's backlog until file descriptors run out.
//!
//! The header deadline is one timer per connection (`Activity`), not hyper's own
//! `header_read_timeout`, which registers a timer for every request and drops it when the
//! headers are in: with it off, WhoAmI took 6–8% less CPU (`docs/benchmarks.md`, stop 43). The
//! connection's timer is looked at only when it fires, and is then set again from when the
//! connection last had nothing to do.

use crate::http::Routes;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// The limits of one listener (`KEYWARD_MAX_CONNECTIONS`, `KEYWARD_HEADER_READ_TIMEOUT_MS`,
/// `KEYWARD_BODY_READ_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// From the moment a connection can send a request to the end of its headers: bounds
    /// slow headers and idle keep-alive connections alike.
    pub header_read_timeout: Duration,
    /// From the end of the headers to the end of the body.
    pub body_read_timeout: Duration,
}

/// What a connection over the cap is told before it is closed.
const REFUSAL: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 103\r\n\r\n\
{\"success\":false,\"message\":\"Too many connections. Try again shortly.\",\"data\":null,\"code\":\"unavailable\"}";

/// Serves `app` on `listener` until `stop` is cancelled, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Routes,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // HTTP/1.1 only: its header deadline runs from the moment a connection is accepted, and
    // again from the end of each answer, so a client that sends nothing, sends slowly, or
    // idles between requests is closed. (Protocol detection for cleartext HTTP/2 would first
    // wait, without a deadline, for bytes a silent client never sends. keyward sits behind a
    // TLS terminator that speaks HTTP/1.1 to it.)
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    let builder = Arc::new(builder);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up: wait a moment, go on.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            connections.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = Serve {
            app: std::cell::RefCell::new(app.clone()),
            peer,
            body_deadline: limits.body_read_timeout,
            activity: activity.clone(),
        };
        let builder = builder.clone();
        let stop = stop.clone();
        let header_deadline = limits.header_read_timeout;
        connections.spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let deadline = tokio::time::sleep(header_deadline);
            tokio::pin!(deadline);
            let mut closing = false;
            loop {
                tokio::select! {
                    biased;
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection closed with an error");
                        }
                        break;
                    }
                    () = deadline.as_mut() => match activity.next_look(header_deadline) {
                        Some(at) => deadline.as_mut().reset(at),
                        // Told once to finish what it is writing and close; closed at once
                        // if still open a deadline later (a client that does not read).
                        None if closing => break,
                        None => {
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                            deadline.as_mut().reset(Instant::now() + header_deadline);
                        }
                    },
                    () = stop.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// What the header deadline needs to know of one connection: whether a request is being
/// served (from the end of its headers until its answer's body has been handed to hyper),
/// and when the last one ended. Written once per request (a counter and a clock read); read
/// only when the connection's timer fires.
struct Activity {
    accepted: Instant,
    serving: AtomicU32,
    /// When the last answer ended, in µs since `accepted` (0: none yet).
    idle_since_us: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            serving: AtomicU32::new(0),
            idle_since_us: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> Serving {
        self.serving.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }

    /// When to look again, or `None`: idle for `deadline` (no request, or one whose headers
    /// have not all arrived).
    fn next_look(&self, deadline: Duration) -> Option<Instant> {
        let now = Instant::now();
        if self.serving.load(Ordering::Relaxed) > 0 {
            // A request is being served; its body has a deadline of its own.
            return Some(now + deadline);
        }
        let idle_since =
            self.accepted + Duration::from_micros(self.idle_since_us.load(Ordering::Relaxed));
        let due = idle_since + deadline;
        (due > now).then_some(due)
    }
}

/// A request being served; dropped when its answer's body has been handed over (or the
/// request was abandoned), which starts the header deadline for the next one.
struct Serving(Arc<Activity>);

impl Drop for Serving {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = u64::try_from(activity.accepted.elapsed().as_micros()).unwrap_or(u64::MAX);
        activity.idle_since_us.store(since, Ordering::Relaxed);
        activity.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The listener's routes, as hyper calls them for each request on one connection.
struct Serve {
    /// The connection's own copy of the routes, called in place: a clone per request would
    /// count a reference up and down on the one counter every connection shares, a cache
    /// line both cores take turns at. Only the connection's task calls it, one request at a
    /// time.
    app: std::cell::RefCell<Routes>,
    peer: std::net::SocketAddr,
    body_deadline: Duration,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for Serve {
    type Response = axum::http::Response<Answer>;
    type Error = Infallible;
    type Future = Served;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Served {
        let serving = self.activity.begin();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = Deadline::new(body, self.body_deadline);
        let request = Request::from_parts(parts, Body::new(body));
        Served {
            answer: self.app.borrow_mut().call(request),
            serving: Some(serving),
        }
    }
}

pin_project_lite::pin_project! {
    /// The routes' answer to one request, its body carrying the request's [`Serving`].
    struct Served {
        #[pin]
        answer: crate::http::Routed,
        serving: Option<Serving>,
    }
}

impl Future for Served {
    type Output = Result<axum::http::Response<Answer>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.answer.poll(cx));
        let serving = this.serving.take();
        Poll::Ready(Ok(response.map(|body| Answer { body, serving })))
    }
}

pin_project_lite::pin_project! {
    /// An answer's body; when hyper drops it (written, or the connection gone), the request
    /// is over.
    struct Answer {
        #[pin]
        body: Body,
        serving: Option<Serving>,
    }
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Tells a connection over the cap to come back, and closes it (never blocking the loop).
async fn refuse(mut stream: tokio::net::TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(REFUSAL.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

pin_project_lite::pin_project! {
    /// A request body that must arrive whole before a deadline, set when the headers were read.
    /// The timer itself is made only if the body is not all there when first read: most
    /// bodies arrive with their headers, and a timer made and dropped per request costs a
    /// lookup of the runtime and a registration.
    struct Deadline {
        #[pin]
        body: hyper::body::Incoming,
        due: tokio::time::Instant,
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl Deadline {
    fn new(body: hyper::body::Incoming, within: Duration) -> Self {
        Self {
            body,
            due: tokio::time::Instant::now() + within,
            timer: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTooSlow;

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until(*this.due)));
        }
        if this
            .timer
            .as_pin_mut()
            .is_some_and(|timer| timer.poll(cx).is_ready())
        {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Raises this process's open-file limit to the hard maximum (connections are files), and
/// returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::REFUSAL;

    #[test]
    fn the_refusal_is_a_well_formed_answer() {
        let (head, body) = REFUSAL.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let envelope: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(envelope["code"], "unavailable");
    }
}
