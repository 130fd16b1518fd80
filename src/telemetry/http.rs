//! The HTTP listener: `/metrics` (Prometheus text), `/health/live`, `/health/ready`.

use super::Health;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Binds `addr` and serves until the process exits. Returns the bound address (port 0 picks one).
pub fn serve_http(
    addr: &str,
    metrics: PrometheusHandle,
    health: Health,
) -> Result<SocketAddr, crate::Error> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| crate::Error::Http {
        addr: addr.into(),
        reason: e.to_string(),
    })?;
    let local = listener.local_addr().map_err(|e| crate::Error::Http {
        addr: addr.into(),
        reason: e.to_string(),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| crate::Error::Http {
            addr: addr.into(),
            reason: e.to_string(),
        })?;
    std::thread::Builder::new()
        .name("eddy-http".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else { continue };
                    let (metrics, health) = (metrics.clone(), health.clone());
                    tokio::spawn(async move {
                        // Read the whole request head: closing with unread bytes would reset the connection.
                        let mut buf = Vec::with_capacity(1024);
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let request = String::from_utf8_lossy(&buf);
                        let path = request.split_whitespace().nth(1).unwrap_or("/");
                        let (status, content_type, body) = match path {
                            "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                            "/health/live" => ("200 OK", "application/json", "{\"live\":true}".to_string()),
                            "/health/ready" if health.is_ready() => ("200 OK", "application/json", health.describe()),
                            "/health/ready" => ("503 Service Unavailable", "application/json", health.describe()),
                            _ => ("404 Not Found", "text/plain", "eddy serves /metrics, /health/live and /health/ready\n".to_string()),
                        };
                        let response = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            });
        })
        .map_err(|e| crate::Error::Http { addr: addr.into(), reason: e.to_string() })?;
    Ok(local)
}
