//! The metrics HTTP listener (issue 17): Prometheus scrapes `GET /metrics` on a loopback
//! port; the listener binds loopback only and a taken port fails the start-up.

use std::io::{Read, Write};
use std::time::Duration;

use latchkey_test_support::{free_port, new_user, Setup};

use crate::assert_refuses_to_start;

/// One HTTP/1.1 request to `127.0.0.1:port`, as a scraper sends it; the whole response.
fn http(port: u16, request_line: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{request_line}\r\nHost: 127.0.0.1\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[tokio::test]
async fn prometheus_scrapes_get_metrics_on_the_loopback_listener() {
    let port = free_port();
    let daemon = Setup::new()
        .toml(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\""))
        .start()
        .await;
    let client = daemon.client().await;
    client
        .create_user(new_user("scraped@example.com", "scraped password 1"))
        .await
        .expect("create");
    let response = tokio::task::spawn_blocking(move || http(port, "GET /metrics HTTP/1.1"))
        .await
        .expect("the scrape runs");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.contains("latchkey_users 1\n"), "{body}");
    assert!(
        body.contains("latchkey_calls_total{method=\"create_user\",outcome=\"ok\"} 1"),
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    // The same text as the socket's metrics method, give or take the counters that moved.
    let over_socket = client.metrics().await.expect("metrics");
    assert!(over_socket.contains("latchkey_users 1\n"));

    let elsewhere = tokio::task::spawn_blocking(move || http(port, "GET / HTTP/1.1"))
        .await
        .expect("runs");
    assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
    let posted = tokio::task::spawn_blocking(move || http(port, "POST /metrics HTTP/1.1"))
        .await
        .expect("runs");
    assert!(posted.starts_with("HTTP/1.1 405"), "{posted}");
    assert!(
        posted.to_ascii_lowercase().contains("allow: get, head"),
        "{posted}"
    );
    let garbage = tokio::task::spawn_blocking(move || http(port, "NOT HTTP AT ALL"))
        .await
        .expect("runs");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    // Scraping counts as a call, and the daemon is unharmed by the bad requests.
    let metrics = client.metrics().await.expect("metrics");
    assert!(
        metrics.contains("latchkey_calls_total{method=\"metrics_http\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_listener_binds_loopback_only_and_a_taken_port_fails_the_start() {
    for address in [
        "0.0.0.0:9464",
        "192.0.2.1:9464",
        "[::]:9464",
        "localhost:9464",
    ] {
        let setup = Setup::new().toml(&format!("[metrics]\nlisten = \"{address}\""));
        assert_refuses_to_start(&setup, &["--check-config"], "metrics.listen").await;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let setup = Setup::new().toml(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\""));
    let why = format!("cannot listen for metrics on 127.0.0.1:{port}");
    assert_refuses_to_start(&setup, &[], &why).await;
}
