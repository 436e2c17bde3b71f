//! Serving one listener, with what protects it from slow and idle clients: every connection
//! must send its request headers within a deadline (which also closes keep-alive connections
//! left idle), a request body must arrive whole within a deadline, and at most so many
//! connections are open at once: past the cap, a new connection gets a short 503 envelope and
//! is closed, instead of waiting in the kernel's backlog until file descriptors run out.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

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
    app: Router,
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
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
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
        let body_deadline = limits.body_read_timeout;
        let service = app
            .clone()
            .map_request(move |request: Request<hyper::body::Incoming>| {
                let (mut parts, body) = request.into_parts();
                parts.extensions.insert(ConnectInfo(peer));
                let body = Deadline::new(body, body_deadline);
                let mut request = Request::from_parts(parts, Body::new(body));
                crate::http::before_routing(&mut request);
                request
            });
        let builder = builder.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(service);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
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
