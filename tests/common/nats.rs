//! NATS for the seed 001 tests: a nats-server with JetStream per test (restartable on its own
//! store), the Go publisher (seed 001's `Event` through nats.go), and the reference's view of
//! what was published.
#![allow(dead_code)]

use super::reference::Produced;
use eddy::topology::Topology;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server with JetStream on free loopback ports, its store in a temporary directory.
pub struct NatsServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    monitor: u16,
    child: Option<Child>,
    /// Extra server flags (e.g. `--user`, `--pass`).
    args: Vec<String>,
}

fn server_binary() -> PathBuf {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nats"))
        .arg("path")
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/nats path");
    assert!(
        out.status.success(),
        "scripts/nats could not provide nats-server"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// A server started with extra flags, e.g. `["--user", "eddy", "--pass", "secret"]`.
    pub fn start_with(args: &[&str]) -> NatsServer {
        let mut server = NatsServer {
            binary: server_binary(),
            dir: tempfile::tempdir().unwrap(),
            port: super::free_port(),
            monitor: super::free_port(),
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string(), "-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .args(&self.args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        super::wait_for(
            "nats-server's JetStream health check",
            Duration::from_secs(30),
            || {
                super::http_get_raw(
                    &format!("127.0.0.1:{}", self.monitor),
                    "/healthz?js-enabled-only=true",
                )
                .is_ok_and(|(status, _)| status == 200)
            },
        );
    }

    /// Stops the server (SIGTERM, as an orchestrator would) and starts it again on the same
    /// port and store. Returns how long it was down.
    pub fn restart(&mut self, down_for: Duration) -> Duration {
        let started = Instant::now();
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
        std::thread::sleep(down_for);
        self.spawn();
        started.elapsed()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One message the publisher published.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Published {
    pub subject: String,
    pub seq: u64,
    pub payload: String,
}

/// Builds tests/go-nats-publisher once per test binary.
fn publisher() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-nats-publisher");
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-nats-publisher"))
                .status()
                .expect("`go` must be installed (scripts/setup installs it)");
            assert!(
                status.success(),
                "go build of tests/go-nats-publisher failed"
            );
            out
        })
        .clone()
}

/// Runs the Go publisher against `url` with `args`; returns what it published.
pub fn publish(url: &str, args: &[&str]) -> Vec<Published> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(publisher())
        .args(["-url", url, "-out"])
        .arg(out.path())
        .args(args)
        .status()
        .expect("run go-nats-publisher");
    assert!(status.success(), "go-nats-publisher {args:?} failed");
    std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Whether a filter matches a subject, written here independently of eddy's.
fn matches(filter: &str, subject: &str) -> bool {
    let (f, s): (Vec<&str>, Vec<&str>) =
        (filter.split('.').collect(), subject.split('.').collect());
    f.iter()
        .enumerate()
        .all(|(i, t)| *t == ">" || s.get(i).is_some_and(|x| t == &"*" || t == x))
        && (f.last() == Some(&">") && s.len() >= f.len() || s.len() == f.len())
}

/// What the reference sees of the published events: each on its split's partition of the
/// source's assignment topic (`topology` bound to the application), the keys inside `data`
/// flattened to `data.<key>` with the subject's version mapping applied, the closing events
/// marked. Events whose `data` is not a JSON object are left out and returned apart: eddy must
/// dead-letter them.
pub fn produced(
    topology: &Topology,
    source: &str,
    published: &[Published],
) -> (Vec<Produced>, Vec<Published>) {
    let source = topology.source(source).unwrap();
    let nats = source.nats.as_ref().unwrap();
    let mut events = Vec::new();
    let mut malformed = Vec::new();
    for message in published {
        let mut value: Value = serde_json::from_str(&message.payload).unwrap();
        let data = value["data"]
            .as_str()
            .and_then(|d| serde_json::from_str::<Value>(d).ok());
        let Some(Value::Object(data)) = data else {
            malformed.push(message.clone());
            continue;
        };
        let renames: Vec<(String, String)> = source
            .versions
            .iter()
            .filter(|v| v.topic.as_deref() == Some(message.subject.as_str()))
            .flat_map(|v| v.fields.clone())
            .collect();
        for (key, inner) in &data {
            value[format!("data.{key}")] = inner.clone();
        }
        for (used, written) in renames {
            let written = written.strip_prefix("data.").unwrap_or(&written);
            value[&used] = data.get(written).cloned().unwrap_or(Value::Null);
        }
        let split = nats
            .subjects
            .iter()
            .position(|f| matches(f, &message.subject))
            .expect("every published subject is read by one split");
        events.push(Produced {
            topic: source.topics[0].clone(),
            partition: split as i32,
            key: String::new(),
            closing: value["type"] == "closing",
            value,
        });
    }
    (events, malformed)
}

/// topology/events.toml with its output renamed `event-aggregates-<suffix>`, written to `dir`.
pub fn events_topology(dir: &Path, suffix: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("topology/events.toml")).unwrap();
    let renamed = text.replace(
        "output = \"event-aggregates\"",
        &format!("output = \"event-aggregates-{suffix}\""),
    );
    let path = dir.join("events.toml");
    std::fs::write(&path, renamed).unwrap();
    path
}
