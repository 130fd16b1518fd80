//! A real Prometheus scrapes a running eddy that processes events from the test broker; its HTTP
//! API then shows a non-zero processing rate, lag series for the assigned partitions and the
//! readiness gauge. When a second instance takes half of the partitions, the first one's lag
//! series for the partitions it gave away disappear; histograms carry buckets fitted to each.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bare HTTP/1.0 GET, enough for Prometheus' API and eddy's endpoints.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn query(port: u16, promql: &str) -> serde_json::Value {
    let encoded: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (_, body) = http_get(port, &format!("/api/v1/query?query={encoded}")).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn prometheus_scrapes_processing_rate_and_lag() {
    let suffix = common::unique("prom");
    let dir = tempfile::tempdir().unwrap();
    let (files, orders, analytics) = common::topologies(dir.path(), &suffix);
    common::create_topics(&[(&orders, 3), (&analytics, 3)]);
    let eddy_port = free_port();
    let app = common::unique("prom-app");
    let mut eddy = Command::new(env!("CARGO_BIN_EXE_eddy"));
    eddy.arg("run")
        .args([
            "--bootstrap-servers",
            &common::bootstrap(),
            "--application-id",
            &app,
        ])
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .args(["--http-listen", &format!("127.0.0.1:{eddy_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for f in &files {
        eddy.args(["--topology", f.to_str().unwrap()]);
    }
    let _eddy = common::KillOnDrop(eddy.spawn().unwrap());
    let second_instance = || {
        let mut second = Command::new(env!("CARGO_BIN_EXE_eddy"));
        second
            .arg("run")
            .args([
                "--bootstrap-servers",
                &common::bootstrap(),
                "--application-id",
                &app,
            ])
            .args(["--state-dir", dir.path().join("state-b").to_str().unwrap()])
            .arg("--no-http")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for f in &files {
            second.args(["--topology", f.to_str().unwrap()]);
        }
        common::KillOnDrop(second.spawn().unwrap())
    };

    // Events keep flowing while Prometheus scrapes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (stop, orders, analytics) = (stop.clone(), orders.clone(), analytics.clone());
        std::thread::spawn(move || {
            let config = eddy::events::GeneratorConfig {
                seed: 9,
                step_ms: 50.0,
                ..Default::default()
            };
            let events = common::generate(60_000, 3, &orders, &analytics, config);
            for chunk in events.chunks(2_000) {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                common::produce_partitioned(chunk);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    common::wait_for("eddy's readiness endpoint", Duration::from_secs(60), || {
        http_get(eddy_port, "/health/ready").is_some_and(|(s, _)| s == 200)
    });
    assert_eq!(
        http_get(eddy_port, "/health/live").map(|(s, _)| s),
        Some(200)
    );

    let prom_port = free_port();
    let config = format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: eddy\n    static_configs:\n      - targets: ['127.0.0.1:{eddy_port}']\n");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let _prometheus = common::KillOnDrop(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's `prometheus` package is installed by scripts/setup"),
    );

    let mut rate = 0.0;
    let mut lag_series = 0;
    common::wait_for(
        "Prometheus to see processing and lag",
        Duration::from_secs(90),
        || {
            let result = query(prom_port, "sum(rate(eddy_records_processed_total[15s]))");
            rate = result["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            let lag = query(prom_port, "eddy_consumer_lag_records");
            lag_series = lag["data"]["result"].as_array().map_or(0, Vec::len);
            rate > 0.0 && lag_series >= 6
        },
    );
    println!("prometheus: processed rate {rate:.0}/s, {lag_series} consumer-lag series");
    assert!(rate > 0.0);
    assert!(
        lag_series >= 6,
        "lag series for the assigned input partitions"
    );
    let ready = query(prom_port, "eddy_ready");
    assert_eq!(
        ready["data"]["result"][0]["value"][1].as_str(),
        Some("1"),
        "eddy_ready is 1 while /health/ready says ready: {ready}"
    );

    // Each histogram has its own buckets: seconds to hours for event-to-emit (session gaps),
    // microseconds for the per-record batch time.
    let metrics = || {
        http_get(eddy_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    common::wait_for("histograms", Duration::from_secs(60), || {
        let text = metrics();
        text.contains("eddy_event_to_emit_latency_seconds_bucket{le=\"1800\"}")
            && text.contains("eddy_batch_processing_seconds_per_record_bucket{le=\"0.000001\"}")
    });

    // A second instance takes about half of the tasks: the first one's lag series for the
    // partitions it no longer owns disappear (gauges left unset go after 30 s).
    let lag_count = || {
        metrics()
            .lines()
            .filter(|l| l.starts_with("eddy_consumer_lag_records{"))
            .count()
    };
    let before = lag_count();
    let _second = second_instance();
    common::wait_for(
        "the revoked partitions' lag series to disappear",
        Duration::from_secs(120),
        || lag_count() * 4 <= before * 3,
    );
    println!(
        "consumer-lag series of the first instance: {before} alone, {} with a second instance",
        lag_count()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = producer.join();
}
