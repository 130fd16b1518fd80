//! Static checks of docker/: no Docker engine runs here, so everything checkable is checked.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> String {
    std::env::var("EDDY_PYTHON").unwrap_or_else(|_| panic!("EDDY_PYTHON is not set: run `scripts/setup` (it makes .venv with pyyaml and datasketches) and set EDDY_PYTHON=.venv/bin/python, or use `scripts/test`"))
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}. `scripts/setup` installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn the_docker_build_context_leaves_out_build_outputs_and_the_image_is_stripped() {
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for needed in ["target/", ".git/", ".venv/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == needed),
            "{needed} in .dockerignore"
        );
    }
    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("--mount=type=cache,target=/src/target"),
        "cached dependency builds"
    );
    assert!(dockerfile.contains("strip -o /eddy"), "a stripped binary");
    assert!(dockerfile.contains("bookworm-slim"));
    assert!(
        dockerfile.contains("/health/ready"),
        "the image's health check is readiness"
    );
}

#[test]
fn compose_file_parses_and_runs_three_replicas_in_one_group() {
    let script = r#"
import os, sys, yaml
compose = yaml.safe_load(open(sys.argv[1]))
services = compose["services"]
replicas = [n for n in services if n.startswith("eddy-")]
assert len(replicas) == 3, replicas
ids = {services[n]["environment"]["EDDY__GROUP_INSTANCE_ID"] for n in replicas}
assert len(ids) == 3, ids
for needed in ["kafka", "kafka-init", "generator", "prometheus", "grafana", "nats", "nats-publisher"]:
    assert needed in services, needed
nats = services["nats"]
assert "-js" in nats["command"] and any(v.startswith("nats-data:") for v in nats["volumes"]), "JetStream on a volume"
assert "js-enabled-only" in " ".join(nats["healthcheck"]["test"])
for name in replicas:
    assert services[name]["depends_on"]["nats"]["condition"] == "service_healthy", name
publisher = services["nats-publisher"]["command"]
assert publisher[:3] == ["generate", "--nats-url", "nats://nats:4222"], publisher
import tomllib
config = tomllib.load(open(os.path.join(os.path.dirname(sys.argv[1]), "eddy.toml"), "rb"))
assert config["nats"]["servers"] == "nats://nats:4222"
assert "/etc/eddy/topology/events.toml" in config["topology"]
assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
for name, service in services.items():
    if service.get("image") == "eddy:local":
        assert "build" in service or service.get("pull_policy") == "never", f"{name} would pull eddy:local"
for name in replicas:
    assert "/health/ready" in " ".join(services[name]["healthcheck"]["test"]), name
assert any(v.startswith("kafka-data:") for v in services["kafka"]["volumes"]), "Kafka keeps its data in a volume"
assert "kafka-data" in compose["volumes"]
# ClickHouse: the recipe runs on its first start, and every file it mounts exists.
import os
clickhouse = services["clickhouse"]
mounts = {v.split(":")[1]: v.split(":")[0] for v in clickhouse["volumes"] if v.startswith("./")}
assert mounts["/docker-entrypoint-initdb.d/init.sql"] == "./clickhouse/init.sql", mounts
assert any(target.startswith("/etc/clickhouse-server/config.d/") for target in mounts), mounts
for source in mounts.values():
    assert os.path.isfile(os.path.join(os.path.dirname(sys.argv[1]), source)), source
assert clickhouse["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
import xml.etree.ElementTree as ET
config = [s for t, s in mounts.items() if t.startswith("/etc/clickhouse-server/config.d/")][0]
kafka = ET.parse(os.path.join(os.path.dirname(sys.argv[1]), config)).getroot().find("kafka")
assert kafka.find("isolation_level").text == "read_committed", "the Kafka engine reads committed records only"
init = open(os.path.join(os.path.dirname(sys.argv[1]), "clickhouse/init.sql")).read()
assert "kafka_broker_list = 'kafka:9092'" in init and "'analytics-aggregates'" in init, "the recipe reads the stack's broker and topic"
print("ok", sorted(services))
"#;
    let out = run(Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(root().join("docker/docker-compose.yml")));
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn promtool_accepts_the_scrape_config_and_alert_rules() {
    let dir = root().join("docker/prometheus");
    // prometheus.yml names the rules by their in-container path; check a copy pointing at the repo file.
    let tmp = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(dir.join("prometheus.yml"))
        .unwrap()
        .replace(
            "/etc/prometheus/alerts.yml",
            dir.join("alerts.yml").to_str().unwrap(),
        );
    std::fs::write(tmp.path().join("prometheus.yml"), config).unwrap();
    run(Command::new("promtool")
        .args(["check", "config"])
        .arg(tmp.path().join("prometheus.yml")));
    let rules = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("alerts.yml")));
    // Every alert in the file parsed as a rule.
    let alerts = std::fs::read_to_string(dir.join("alerts.yml"))
        .unwrap()
        .lines()
        .filter(|line| line.trim_start().starts_with("- alert:"))
        .count();
    assert!(alerts >= 10, "the alert rules are in alerts.yml");
    assert!(
        rules.contains(&format!("SUCCESS: {alerts} rules found")),
        "{rules}"
    );
}

fn metric_names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("eddy_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        let mut name = text[start..end].to_string();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(stripped) = name.strip_suffix(suffix) {
                name = stripped.to_string();
            }
        }
        names.push(name);
        i = end;
    }
    names
}

fn check_uses_only_exported_metrics(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let exported: Vec<&str> = eddy::telemetry::metrics::CATALOG
        .iter()
        .map(|m| m.0)
        .collect();
    let used = metric_names_in(&text);
    for name in &used {
        assert!(
            exported.contains(&name.as_str()),
            "{} uses `{name}`, which eddy does not export",
            path.display()
        );
    }
    used.len()
}

#[test]
fn dashboard_parses_and_queries_only_exported_metrics() {
    let path = root().join("docker/grafana/dashboards/eddy.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 12);
    assert!(check_uses_only_exported_metrics(&path) >= 12);
    check_uses_only_exported_metrics(&root().join("docker/prometheus/alerts.yml"));
}

#[test]
fn monitoring_docs_document_every_metric() {
    let docs = std::fs::read_to_string(root().join("docs/monitoring.md")).unwrap();
    for (name, kind, labels, _) in eddy::telemetry::metrics::CATALOG {
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}`")))
            .unwrap_or_else(|| panic!("docs/monitoring.md has no metrics-table row for {name}"));
        assert!(
            row.contains(kind) && row.contains(labels),
            "docs/monitoring.md row for {name} must give type {kind} and labels {labels}: {row}"
        );
    }
}
