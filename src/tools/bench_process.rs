//! What the broker benchmarks share: topology files rewritten to one run's topics, and eddy run as
//! a child process (as users run it), so its peak memory is its own and not the harness's.

use crate::topology::{Schema, Topology};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Topology files with this run's input and output topics, written under the run's directory.
pub struct BenchTopology {
    pub files: Vec<PathBuf>,
    pub topology: Topology,
    /// The input topic of each schema the topology reads.
    pub inputs: Vec<(Schema, String)>,
}

impl BenchTopology {
    /// Rewrites `files`: each source reads `bench-<schema>-<run>`, each output goes to
    /// `bench-<output>-<run>`. Only the seed schemas can be generated.
    pub fn prepare(files: &[PathBuf], run: &str, dir: &Path) -> anyhow::Result<BenchTopology> {
        let mut written = Vec::new();
        let mut inputs: Vec<(Schema, String)> = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let mut table: toml::Table = text.parse()?;
            for source in tables_mut(&mut table, "source") {
                let schema = source
                    .get("schema")
                    .and_then(|s| s.as_str())
                    .unwrap_or("json")
                    .to_string();
                let topic = format!("bench-{schema}-{run}");
                let parsed = match schema.as_str() {
                    "order_created" => Schema::OrderCreated,
                    "analytics_event" => Schema::AnalyticsEvent,
                    other => anyhow::bail!(
                        "{}: source schema `{other}`: eddy bench generates the seed services' events, so its sources must use `order_created` or `analytics_event`",
                        file.display()
                    ),
                };
                source.remove("topics");
                source.remove("version");
                source.insert("topic".into(), topic.clone().into());
                if !inputs.iter().any(|(s, _)| *s == parsed) {
                    inputs.push((parsed, topic));
                }
            }
            for aggregation in tables_mut(&mut table, "aggregation") {
                for key in ["output", "late_records_topic"] {
                    if let Some(topic) = aggregation.get(key).and_then(|t| t.as_str()) {
                        let renamed = format!("bench-{topic}-{run}");
                        aggregation.insert(key.into(), renamed.into());
                    }
                }
            }
            let name = file.file_name().unwrap_or_default();
            let path = dir.join(name);
            std::fs::write(&path, toml::to_string(&table)?)?;
            written.push(path);
        }
        let topology = Topology::from_files(&written)?;
        Ok(BenchTopology {
            files: written,
            topology,
            inputs,
        })
    }
}

/// An `eddy run` child process.
pub struct EddyProcess {
    child: Child,
    http: String,
    log: PathBuf,
}

/// How to start it.
pub struct EddyRun<'a> {
    pub bootstrap: &'a str,
    pub application_id: &'a str,
    pub topology: &'a [PathBuf],
    pub state_dir: &'a Path,
    pub threads: usize,
    pub commit_interval_ms: u64,
    pub log: PathBuf,
    /// Extra environment (e.g. `EDDY__NATS__SERVERS`).
    pub env: Vec<(String, String)>,
}

impl EddyProcess {
    pub fn start(run: EddyRun<'_>) -> anyhow::Result<EddyProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let http = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(&run.log)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("run")
            .args(["--bootstrap-servers", run.bootstrap])
            .args(["--application-id", run.application_id])
            .arg("--state-dir")
            .arg(run.state_dir)
            .args(["--num-threads", &run.threads.to_string()])
            .args(["--commit-interval-ms", &run.commit_interval_ms.to_string()])
            .args(["--http-listen", &http])
            .args([
                "--log-level",
                &std::env::var("EDDY_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            ]);
        for file in run.topology {
            command.arg("--topology").arg(file);
        }
        let child = command
            .envs(run.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(EddyProcess {
            child,
            http,
            log: run.log,
        })
    }

    /// Waits until `/health/ready` answers 200 (group joined, every task restored).
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("eddy exited with {status}; its log: {}", self.log_tail());
            }
            if http_status(&self.http, "/health/ready").is_ok_and(|s| s == 200) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "eddy not ready after {timeout:?}; its log: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails when the process exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("eddy exited with {status}; its log: {}", self.log_tail());
        }
        Ok(())
    }

    /// CPU time eddy used so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        super::cpu_seconds(&self.child.id().to_string())
    }

    /// The latest `eddy_loop_time_ratio` gauges from `/metrics`: (phase, share of the last commit
    /// interval). Empty before the first commit tick.
    pub fn loop_time_ratios(&self) -> Vec<(String, f64)> {
        let Ok((200, body)) = http_get(&self.http, "/metrics") else {
            return Vec::new();
        };
        body.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("eddy_loop_time_ratio{phase=\"")?;
                let (phase, value) = rest.split_once("\"}")?;
                Some((phase.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// The process's peak resident set size (VmHWM) so far.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// The sum of a metric's series from `/metrics` (0 when absent or unreachable).
    pub fn metric(&self, name: &str) -> f64 {
        let Ok((200, body)) = http_get(&self.http, "/metrics") else {
            return 0.0;
        };
        body.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// kill -9: no shutdown, nothing committed or closed.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the clean shutdown.
    pub fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = self.child.wait()?;
        if !status.success() {
            anyhow::bail!("eddy exited with {status}; its log: {}", self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut start = text.len().saturating_sub(2000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }
}

/// The status of a `GET` over a new connection, after reading the whole response (so timing a
/// call times the answer, not just its first bytes).
pub fn http_status(addr: &str, path: &str) -> std::io::Result<u16> {
    let response = http_response(addr, path)?;
    Ok(status_of(&response))
}

/// The status and body of a `GET` over a new connection.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let response = http_response(addr, path)?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status_of(&response), body.to_string()))
}

fn http_response(addr: &str, path: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response)
}

fn status_of(response: &[u8]) -> u16 {
    String::from_utf8_lossy(&response[..12.min(response.len())])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The value at quantile `p` of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The tables of an array of tables (`[[source]]`, `[[aggregation]]`), mutable; none if absent.
pub fn tables_mut<'a>(
    table: &'a mut toml::Table,
    key: &str,
) -> impl Iterator<Item = &'a mut toml::Table> {
    table
        .get_mut(key)
        .and_then(|v| v.as_array_mut())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_table_mut())
}
