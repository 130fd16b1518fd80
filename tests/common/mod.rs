//! Helpers for tests against the real broker that `scripts/kafka` starts.
#![allow(dead_code)]

use eddy::kafka::{ChangelogReader, ClientSettings, ReadRecord, RecordProducer, TopicAdmin};
use eddy::task::AggregateRecord;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test broker's address. Broker tests never pass silently without one.
pub fn bootstrap() -> String {
    std::env::var("EDDY_TEST_BOOTSTRAP").unwrap_or_else(|_| {
        panic!("EDDY_TEST_BOOTSTRAP is not set: broker tests need the real Kafka broker. Run them with `scripts/test` (everything) or `scripts/kafka run -- cargo test --release`")
    })
}

pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{:x}", std::process::id(), nanos & 0xff_ffff_ffff)
}

pub fn settings() -> ClientSettings {
    ClientSettings::plain(&bootstrap())
}

pub fn create_topics(topics: &[(&str, i32)]) {
    TopicAdmin::new(&settings())
        .unwrap()
        .create_plain_topics(topics)
        .unwrap();
}

pub fn produce(records: impl IntoIterator<Item = (String, Vec<u8>, Vec<u8>)>) {
    let mut producer = RecordProducer::new(&settings(), None).unwrap();
    for (topic, key, value) in records {
        producer.send_to(&topic, &key, &value).unwrap();
    }
    producer.flush().unwrap();
}

pub fn read_committed(topic: &str) -> Vec<ReadRecord> {
    ChangelogReader::new(&settings(), true)
        .unwrap()
        .read_topic(topic, Duration::from_secs(60))
        .unwrap()
}

/// Data records in every changelog of `app`, read back read_committed (end offsets would count
/// transaction markers too).
pub fn changelog_records(app: &str, topology: &eddy::topology::Topology) -> i64 {
    topology
        .aggregations
        .iter()
        .map(|aggregation| {
            let topic = eddy::topology::changelog_topic(app, &aggregation.name);
            read_committed(&topic).len() as i64
        })
        .sum()
}

pub fn read_aggregates(topic: &str) -> Vec<AggregateRecord> {
    read_committed(topic)
        .into_iter()
        .filter_map(|r| r.value)
        .map(|v| serde_json::from_slice(&v).unwrap())
        .collect()
}

/// The shipped topology files with every topic renamed `<topic>-<suffix>`, written to `dir`.
/// Returns the files and the renamed input topics (orders, analytics).
pub fn topologies(dir: &Path, suffix: &str) -> (Vec<PathBuf>, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for name in ["analytics.toml", "orders.toml"] {
        let text = std::fs::read_to_string(root.join("topology").join(name)).unwrap();
        let mut renamed = text.clone();
        for topic in [
            "analytics-aggregates",
            "analytics-sessions",
            "order-aggregates",
        ] {
            renamed = renamed.replace(
                &format!("output = \"{topic}\""),
                &format!("output = \"{topic}-{suffix}\""),
            );
        }
        renamed = renamed
            .replace(
                "topic = \"orders\"",
                &format!("topic = \"orders-{suffix}\""),
            )
            .replace(
                "topic = \"analytics\"",
                &format!("topic = \"analytics-{suffix}\""),
            );
        let path = dir.join(name);
        std::fs::write(&path, renamed).unwrap();
        files.push(path);
    }
    (
        files,
        format!("orders-{suffix}"),
        format!("analytics-{suffix}"),
    )
}

/// The shipped topologies on fresh, uniquely named topics with `partitions` partitions each.
pub struct Shipped {
    pub suffix: String,
    pub dir: tempfile::TempDir,
    pub files: Vec<PathBuf>,
    pub orders: String,
    pub analytics: String,
    pub topology: eddy::topology::Topology,
}

/// Every output topic of the shipped topologies renamed with `suffix`: what the reference checks.
pub fn shipped_outputs(suffix: &str) -> Vec<String> {
    [
        "analytics-aggregates",
        "analytics-sessions",
        "order-aggregates",
    ]
    .iter()
    .map(|topic| format!("{topic}-{suffix}"))
    .collect()
}

impl Shipped {
    pub fn outputs(&self) -> Vec<String> {
        shipped_outputs(&self.suffix)
    }

    /// Starts `eddy run` on these topologies, exactly-once, as `instance` of `app`.
    pub fn start(
        &self,
        app: &str,
        instance: &str,
        extra_env: Vec<(String, String)>,
    ) -> EddyProcess {
        EddyProcess::start(&EddyOptions {
            application_id: app,
            topologies: &self.files,
            state_dir: self.dir.path(),
            guarantee: "exactly_once",
            instance,
            extra_env,
        })
    }
}

pub fn shipped(name: &str, partitions: i32) -> Shipped {
    let suffix = unique(name);
    let dir = tempfile::tempdir().unwrap();
    let (files, orders, analytics) = topologies(dir.path(), &suffix);
    let topology = eddy::topology::Topology::from_files(&files).unwrap();
    create_topics(&[(&orders, partitions), (&analytics, partitions)]);
    Shipped {
        suffix,
        dir,
        files,
        orders,
        analytics,
        topology,
    }
}

/// An `eddy run` subprocess, the way users run it.
pub struct EddyProcess {
    pub child: Child,
    pub log: PathBuf,
}

pub struct EddyOptions<'a> {
    pub application_id: &'a str,
    pub topologies: &'a [PathBuf],
    pub state_dir: &'a Path,
    pub guarantee: &'a str,
    pub instance: &'a str,
    pub extra_env: Vec<(String, String)>,
}

impl EddyProcess {
    pub fn start(options: &EddyOptions<'_>) -> EddyProcess {
        let log = options
            .state_dir
            .join(format!("eddy-{}.log", options.instance));
        std::fs::create_dir_all(options.state_dir).unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
        command.arg("run");
        // The plaintext test listener unless the test names another (the SASL_SSL one).
        if !options
            .extra_env
            .iter()
            .any(|(k, _)| k == "EDDY__BOOTSTRAP_SERVERS")
        {
            command.args(["--bootstrap-servers", &bootstrap()]);
        }
        command
            .args(["--application-id", options.application_id])
            .args([
                "--state-dir",
                options.state_dir.join(options.instance).to_str().unwrap(),
            ])
            .args(["--processing-guarantee", options.guarantee])
            .args(["--num-threads", "2"])
            // EDDY_TEST_RUST_LOG raises the level when chasing a failure.
            .env(
                "RUST_LOG",
                std::env::var("EDDY_TEST_RUST_LOG").unwrap_or_else(|_| "eddy=info,warn".into()),
            )
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        for topology in options.topologies {
            command.args(["--topology", topology.to_str().unwrap()]);
        }
        // HTTP (metrics, health, query API) only where a test asks for it with EDDY__HTTP__LISTEN.
        if !options
            .extra_env
            .iter()
            .any(|(k, _)| k == "EDDY__HTTP__LISTEN")
        {
            command.arg("--no-http");
        }
        for (k, v) in &options.extra_env {
            command.env(k, v);
        }
        EddyProcess {
            child: command.spawn().expect("spawn eddy"),
            log,
        }
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn stop(mut self, within: Duration) -> i32 {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "eddy did not stop within {within:?} after SIGTERM; log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// This instance's log and those of every other instance sharing its state directory, each
    /// under its file name: a test with several instances needs all of them to see which stalled.
    pub fn all_logs_text(&self) -> String {
        let dir = self
            .log
            .parent()
            .expect("the log lives in the state directory");
        let mut logs: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let name = p.file_name().unwrap_or_default().to_string_lossy();
                        name.starts_with("eddy-") && name.ends_with(".log")
                    })
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        logs.iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                format!("==> {} <==\n{text}", p.display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EddyProcess {
    /// A failing test must not leave eddy running. With `EDDY_TEST_LOG_DIR` set, the log is kept
    /// there (the state directory is a temporary one), passing or not.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(dir) = std::env::var_os("EDDY_TEST_LOG_DIR") {
            let name = self
                .log
                .parent()
                .and_then(|p| p.file_name())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(
                &self.log,
                Path::new(&dir).join(format!(
                    "{}-{name}-{}",
                    std::process::id(),
                    self.log.file_name().unwrap_or_default().to_string_lossy()
                )),
            );
        }
    }
}

/// Kills a helper process (Prometheus, a raw eddy) when the test ends, passing or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub mod clickhouse;
pub mod nats;

/// Runs `.venv`'s Python (`EDDY_PYTHON`) with `args`, `input` as JSON on stdin, and returns the
/// JSON it prints; fails the test with Python's stderr if it fails.
pub fn python_json(args: &[&std::ffi::OsStr], input: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let python = std::env::var("EDDY_PYTHON").unwrap_or_else(|_| panic!("EDDY_PYTHON is not set: run `scripts/setup` (it makes .venv with datasketches, pyyaml and chdb-core) and set EDDY_PYTHON=.venv/bin/python, or use `scripts/test`"));
    let mut child = Command::new(python)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
pub mod reference;

use reference::Produced;

/// `n` generated events spread over `partitions` by key, then one closing record per partition
/// and topic a day later, so every real window closes.
pub fn generate(
    n: usize,
    partitions: i32,
    orders: &str,
    analytics: &str,
    config: eddy::events::GeneratorConfig,
) -> Vec<Produced> {
    let mut generator = eddy::events::EventGenerator::new(config);
    let mut events = Vec::with_capacity(n + 2 * partitions as usize);
    let mut last_ms = 0;
    for _ in 0..n {
        let e = generator.next_event();
        last_ms = last_ms.max(e.event_time_ms);
        let topic = if e.stream == "orders" {
            orders
        } else {
            analytics
        };
        let partition = eddy::task::partition_for(e.key.as_bytes(), partitions);
        events.push(Produced {
            topic: topic.into(),
            partition,
            key: e.key,
            value: serde_json::from_slice(&e.value).unwrap(),
            closing: false,
        });
    }
    let closing_ms = (last_ms + 86_400_000) / 1000 * 1000;
    events.extend(closing_records(partitions, orders, analytics, closing_ms));
    events
}

/// One closing record per partition of each topic at `closing_ms`, so every real window closes.
pub fn closing_records(
    partitions: i32,
    orders: &str,
    analytics: &str,
    closing_ms: i64,
) -> Vec<Produced> {
    let mut events = Vec::new();
    for partition in 0..partitions {
        let order = serde_json::json!({"order_id": format!("closing-{partition}"), "user_id": "closer", "items": [{"product_id": "closing", "quantity": 1, "unit_price": 0.0}], "total_amount": 0.0, "timestamp": closing_ms / 1000});
        let event = serde_json::json!({"id": format!("closing-{partition}"), "timestamp": eddy::record::format_rfc3339_ms(closing_ms), "eventType": "closing", "userId": "closer"});
        events.push(Produced {
            topic: orders.into(),
            partition,
            key: "closer".into(),
            value: order,
            closing: true,
        });
        events.push(Produced {
            topic: analytics.into(),
            partition,
            key: "closer".into(),
            value: event,
            closing: true,
        });
    }
    events
}

/// Every record of `topics` as produced, in partition and offset order; records keyed `closer`
/// are closing records.
pub fn read_back(topics: &[&str]) -> Vec<Produced> {
    let mut records: Vec<ReadRecord> = topics.iter().flat_map(|t| read_committed(t)).collect();
    records
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    records
        .into_iter()
        .map(|r| {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).to_string();
            Produced {
                topic: r.topic,
                partition: r.partition,
                closing: key == "closer",
                key,
                value: serde_json::from_slice(r.value.as_deref().unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null),
            }
        })
        .collect()
}

/// Builds the Go seed producer (`tests/go-producer`, segmentio/kafka-go) once per test binary.
pub fn go_producer() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-producer");
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-producer"))
                .status()
                .expect("`go` must be installed: the seed-producer tests build tests/go-producer with it");
            assert!(status.success(), "go build of tests/go-producer failed");
            out
        })
        .clone()
}

/// Runs the Go seed producer against the test broker.
pub fn run_go_producer(args: &[&str]) {
    let status = Command::new(go_producer())
        .args(["-brokers", &bootstrap()])
        .args(args)
        .status()
        .expect("run go-producer");
    assert!(status.success(), "go-producer {args:?} failed");
}

/// A free loopback port for a child's HTTP listener.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET: (status, body text).
pub fn http_get_raw(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// A plain HTTP/1.1 GET of a text body (e.g. `/metrics`).
pub fn http_get_text(addr: &str, path: &str) -> std::io::Result<String> {
    http_get_raw(addr, path).map(|(_, body)| body)
}

/// The sum of a Prometheus counter over the series whose labels contain `label` (e.g.
/// `aggregation="x"`), from eddy's `/metrics`.
pub fn counter_sum(addr: &str, name: &str, label: &str) -> f64 {
    http_get_text(addr, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.1 GET: (status, JSON body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, serde_json::Value)> {
    let (status, body) = http_get_raw(addr, path)?;
    Ok((
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    ))
}

/// Waits (up to 3 minutes) until every window of `expected` was emitted to `outputs`, keeps
/// reading for a few more seconds (so a late duplicate is caught too), then asserts none is
/// wrong, duplicated or missing; prints the counts, and eddy's log on failure.
pub fn wait_for_exact(
    expected: &std::collections::BTreeMap<reference::Identity, reference::Expected>,
    outputs: &[String],
    eddy: &EddyProcess,
) {
    let verify = || {
        let emitted: Vec<_> = outputs.iter().flat_map(|t| read_aggregates(t)).collect();
        reference::verify(expected, &emitted)
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut result = verify();
    while result.3 > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        result = verify();
    }
    if result.3 == 0 {
        std::thread::sleep(Duration::from_secs(5));
        result = verify();
    }
    let (checked, mismatches, duplicates, missing) = result;
    if missing > 0 || mismatches > 0 || duplicates > 0 {
        eprintln!("eddy logs:\n{}", eddy.all_logs_text());
    }
    println!("windows checked: {checked}, mismatches: {mismatches}, duplicates: {duplicates}, missing: {missing}");
    assert_eq!((mismatches, duplicates, missing), (0, 0, 0));
}

/// Produces events to their explicit partitions.
pub fn produce_partitioned(events: &[Produced]) {
    let mut producer = RecordProducer::new(&settings(), None).unwrap();
    for e in events {
        let record = eddy::task::OutgoingRecord {
            kind: eddy::task::OutgoingKind::DeadLetter,
            topic: e.topic.clone(),
            partition: Some(e.partition),
            key: Some(e.key.clone().into_bytes()),
            value: Some(serde_json::to_vec(&e.value).unwrap()),
            headers: Vec::new(),
            window_end_ms: None,
        };
        producer.send(&record).unwrap();
    }
    producer.flush().unwrap();
}
