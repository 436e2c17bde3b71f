//! `bare-hyper ADDRESS`: answers every request with keyward's `/healthz` body, on tokio's
//! multi-threaded runtime (as keyward runs), one task per connection, keep-alive on. Nothing
//! else: no timeouts, no limits, no headers beyond hyper's own. The ceiling of a Rust HTTP
//! service on this machine.
//!
//! `bare-hyper ADDRESS UPSTREAM` (e.g. `http://127.0.0.1:8080`): a bare reverse proxy instead,
//! every request sent on to UPSTREAM as it came, through hyper-util's pooled client, and its
//! answer streamed back. No checks, no header filtering: the ceiling of a Rust gateway.

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;

const BODY: &[u8] = br#"{"success":true,"message":"up","data":null}"#;

async fn answer(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

type Proxy = Client<HttpConnector, hyper::body::Incoming>;

async fn forward(
    client: Arc<(Proxy, String)>,
    mut request: Request<hyper::body::Incoming>,
) -> Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
    let (proxy, upstream) = &*client;
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = format!("{upstream}{path}").parse::<Uri>().expect("a URI");
    proxy.request(request).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9090".to_owned());
    let upstream = std::env::args().nth(2);
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let client = upstream.map(|upstream| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let proxy = Client::builder(TokioExecutor::new()).build(connector);
        Arc::new((proxy, upstream.trim_end_matches('/').to_owned()))
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        match client.clone() {
            None => tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(io, service_fn(answer))
                    .await;
            }),
            Some(client) => tokio::spawn(async move {
                let service = service_fn(move |request| forward(client.clone(), request));
                let _ = http1::Builder::new().serve_connection(io, service).await;
            }),
        };
    }
}
