//! Slow, idle and too many connections cannot starve a listener (the public and the internal
//! one alike): headers and bodies have deadlines, idle keep-alive connections are closed, and
//! past the connection cap a new connection is told 503 and closed.

use crate::helpers::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn host_of(address: &str) -> String {
    address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `limit` passes): what it sent, and when.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(String, Instant)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((
                    String::from_utf8_lossy(&received).into_owned(),
                    Instant::now(),
                ))
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed_on_both_listeners() {
    let app = spawn_app_with(|s| {
        s.connection_limits.header_read_timeout = Duration::from_millis(400);
    })
    .await;
    for address in [&app.address, &app.internal_address] {
        let host = host_of(address);
        // Twenty clients that never finish their headers.
        let mut slow = Vec::new();
        for _ in 0..20 {
            let mut stream = TcpStream::connect(&host).await.unwrap();
            stream
                .write_all(b"POST /api/v1/PartnerP2P/WhoAmI HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
            slow.push(stream);
        }
        // And five that connect and say nothing at all.
        for _ in 0..5 {
            slow.push(TcpStream::connect(&host).await.unwrap());
        }
        // One that sends a request, then idles on its keep-alive connection.
        let mut idle = TcpStream::connect(&host).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();

        // Meanwhile others are served.
        let health = app
            .client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);

        let started = Instant::now();
        for mut stream in slow {
            let closed = until_closed(&mut stream, Duration::from_secs(5)).await;
            assert!(
                closed.is_some(),
                "{address}: a slow client was not disconnected"
            );
        }
        let (answer, _) = until_closed(&mut idle, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{address}: an idle keep-alive connection stayed open"));
        assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off() {
    let app = spawn_app_with(|s| {
        s.connection_limits.body_read_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(host_of(&app.address)).await.unwrap();
    stream
        .write_all(
            b"POST /api/v1/no-auth/PartnerP2P/OnboardPartner HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partner",
        )
        .await
        .unwrap();
    let started = Instant::now();
    // A byte now and then, never the whole body.
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), trickle).await;
    let (answer, _) = until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection was closed");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid_json"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn past_the_connection_cap_a_new_connection_is_told_503_and_closed() {
    let app = spawn_app_with(|s| s.connection_limits.max_connections = 3).await;
    for (address, path) in [
        (&app.address, "/healthz"),
        (&app.internal_address, "/metrics"),
    ] {
        let host = host_of(address);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(&host).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;

        let mut extra = TcpStream::connect(&host).await.unwrap();
        let (answer, _) = until_closed(&mut extra, Duration::from_secs(5))
            .await
            .expect("the extra connection was answered and closed");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("\"code\":\"unavailable\""), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1"),
            "{answer}"
        );

        // A slot frees up when a connection closes.
        drop(held.pop());
        let mut ok = false;
        for _ in 0..50 {
            let response = reqwest::Client::new()
                .get(format!("{address}{path}"))
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == 200) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "{address}: served again once a connection closed");
    }
}
