//! eddy's configuration: built-in defaults, then a TOML file (`--config`), then `EDDY__SECTION__KEY`
//! environment variables, then command-line flags. Unknown keys are errors naming key and origin.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("could not read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("could not read the secret file {path} named by `{key}`: {source}. Mount the secret there, or set `{property}` directly (e.g. from an environment variable)")]
    SecretFile {
        key: String,
        property: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{key}` = {value} is not valid: {allowed}")]
    Invalid {
        key: String,
        value: String,
        allowed: String,
    },
}

/// `processing.guarantee`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Output, state (changelogs) and input offsets commit in one Kafka transaction.
    ExactlyOnce,
    /// Offsets commit after output is acknowledged; a crash may replay, and so duplicate, output.
    AtLeastOnce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve `/metrics`, `/health/live` and `/health/ready`.
    pub enabled: bool,
    pub listen: String,
    /// Also serve the query API (`/api/v1/`), indexing every output topic in memory.
    pub query_api: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: "0.0.0.0:9464".into(),
            query_api: true,
        }
    }
}

/// How eddy connects to NATS, for topologies with `type = "nats"` sources (seed 001's bus).
/// Secrets are read from files, as Kubernetes mounts them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs, comma-separated (`nats://nats-1:4222,nats://nats-2:4222`).
    pub servers: String,
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes it.
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// User name for user/password authentication, with `password_file`.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a connection without TLS.
    pub require_tls: bool,
    pub connect_timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: "nats://localhost:4222".into(),
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            password_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            require_tls: false,
            connect_timeout_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `eddy=debug,rdkafka=warn`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Everything `eddy run` needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Consumer group, transactional-id prefix and internal-topic prefix (Kafka Streams' `application.id`).
    pub application_id: String,
    pub bootstrap_servers: String,
    /// Topology files to run.
    pub topology: Vec<PathBuf>,
    /// Local RocksDB state, one subdirectory per task.
    pub state_dir: PathBuf,
    pub processing_guarantee: ProcessingGuarantee,
    /// Commit (and, under exactly-once, transaction) interval. Default 100 ms under exactly-once and
    /// 30 000 ms under at-least-once, as in Kafka Streams.
    pub commit_interval_ms: Option<u64>,
    /// Worker threads that process tasks in parallel.
    pub num_threads: usize,
    /// Static membership (`group.instance.id`): a restart within the session timeout keeps its partitions.
    pub group_instance_id: Option<String>,
    /// Replication factor of internal topics eddy creates.
    pub replication_factor: i16,
    /// How long a clean shutdown may take before eddy exits anyway.
    pub shutdown_timeout_ms: u64,
    /// An input partition read to its end with no record for this long is idle: it stops holding
    /// back repartitioned windows until it has records again (Flink's `withIdleness`). 0 turns it off.
    pub idle_timeout_ms: u64,
    /// How long eddy keeps retrying while the brokers are unreachable or keep answering with
    /// retriable errors (restore, poll, produce, commit) before it stops with an error naming
    /// what it was doing. Kafka Streams' `task.timeout.ms` (default 5 minutes). Readiness is
    /// false meanwhile.
    pub task_timeout_ms: u64,
    /// Opt-in wall-clock closing: after this long without a record moving an input partition's
    /// stream time, its stream time goes on with the wall clock, so the last windows of a stream
    /// that stopped still close after their grace. 0 (default) keeps event time purely
    /// record-driven, as Kafka Streams does.
    pub wall_clock_close_ms: u64,
    /// How often records of repartition topics that this instance's tasks have committed past are
    /// deleted (Kafka Streams' `repartition.purge.interval.ms`); 0 keeps them until retention.
    pub repartition_purge_interval_ms: u64,
    /// How long the state directory of a task this instance no longer runs is kept (Kafka
    /// Streams' `state.cleanup.delay.ms`): a task that comes back within it restores only what
    /// its checkpoint lacks.
    pub state_cleanup_delay_ms: u64,
    /// A checkpoint older than this is ignored and the store restored from scratch: it should be
    /// the changelogs' `delete.retention.ms` (Kafka's default, 1 day), past which compaction may
    /// have removed tombstones the local files never saw.
    pub checkpoint_max_age_ms: u64,
    /// Warm copies kept of each stateful task, on other instances (Kafka Streams'
    /// `num.standby.replicas`): an instance that takes a task over restores only what its copy
    /// lacks. 0 (default) keeps none.
    pub num_standby_replicas: u32,
    /// Bytes the write-back caches of all stores may keep after a commit (Kafka Streams'
    /// `statestore.cache.max.bytes`), shared evenly by the stores open; more spills to RocksDB.
    pub cache_max_bytes: u64,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// NATS connection, used only when a topology has NATS sources.
    pub nats: NatsConfig,
    /// librdkafka properties for every client (e.g. `"security.protocol" = "SASL_SSL"`).
    pub kafka: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    pub kafka_consumer: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    pub kafka_producer: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            application_id: "eddy".into(),
            bootstrap_servers: "localhost:9092".into(),
            topology: vec![
                "topology/analytics.toml".into(),
                "topology/orders.toml".into(),
            ],
            state_dir: PathBuf::from("/tmp/eddy-state"),
            processing_guarantee: ProcessingGuarantee::ExactlyOnce,
            commit_interval_ms: None,
            num_threads: 2,
            group_instance_id: None,
            replication_factor: 1,
            shutdown_timeout_ms: 30_000,
            idle_timeout_ms: 30_000,
            task_timeout_ms: 300_000,
            wall_clock_close_ms: 0,
            repartition_purge_interval_ms: 30_000,
            state_cleanup_delay_ms: 600_000,
            checkpoint_max_age_ms: 86_400_000,
            num_standby_replicas: 0,
            cache_max_bytes: crate::task::DEFAULT_CACHE_MAX_BYTES as u64,
            http: HttpConfig::default(),
            log: LogConfig::default(),
            nats: NatsConfig::default(),
            kafka: BTreeMap::new(),
            kafka_consumer: BTreeMap::new(),
            kafka_producer: BTreeMap::new(),
        }
    }
}

const ENV_PREFIX: &str = "EDDY__";
/// librdkafka properties that hold secrets. Each may instead be given as `<property>.file`: the
/// path of a file whose contents (less one trailing newline) are the value, as Kubernetes mounts
/// secrets. With environment variables: `EDDY__KAFKA__SASL_PASSWORD_FILE=/run/secrets/kafka`.
pub const SECRET_PROPERTIES: [&str; 5] = [
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.truststore.password",
    "sasl.oauthbearer.client.secret",
];
/// Sections whose keys are librdkafka properties: `_` in an env key becomes `.`.
const PASS_THROUGH: [&str; 3] = ["kafka", "kafka_consumer", "kafka_producer"];

impl Config {
    /// The effective commit interval.
    pub fn commit_interval_ms(&self) -> u64 {
        self.commit_interval_ms
            .unwrap_or(match self.processing_guarantee {
                ProcessingGuarantee::ExactlyOnce => 100,
                ProcessingGuarantee::AtLeastOnce => 30_000,
            })
    }

    /// Loads defaults, then `file` (if any), then the `EDDY__*` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default()).expect("defaults serialize");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let from_file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        origin: path.display().to_string(),
                        message: e.to_string(),
                    })?;
            // Deserialize the file alone first, so an unknown key is reported against the file.
            toml::Value::Table(from_file.clone())
                .try_into::<Config>()
                .map_err(|e| ConfigError::Parse {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                })?;
            merge(&mut table, from_file);
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let origin = format!("environment variable {name}");
            let (section, key) = match path.as_slice() {
                [key] => (None, key.clone()),
                [section, key] if PASS_THROUGH.contains(&section.as_str()) => {
                    (Some(section.clone()), key.replace('_', "."))
                }
                [section, key] => (Some(section.clone()), key.clone()),
                _ => {
                    return Err(ConfigError::Parse {
                        origin,
                        message: "expected EDDY__KEY or EDDY__SECTION__KEY".into(),
                    })
                }
            };
            let parsed = parse_env_value(section.as_deref(), &key, &value);
            let target = match &section {
                None => &mut table,
                Some(section) => table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| ConfigError::Parse {
                        origin: origin.clone(),
                        message: format!("`{section}` is not a section"),
                    })?,
            };
            let as_string = toml::Value::String(value.clone());
            let typed_differently = parsed != as_string;
            target.insert(key.clone(), parsed);
            let checked = toml::Value::Table(table.clone()).try_into::<Config>();
            if let Err(error) = checked {
                // `EDDY__GROUP_INSTANCE_ID=1` is the string "1": when a value that parses as a
                // number or boolean does not fit, take it as the string it was written as.
                let target = match &section {
                    None => &mut table,
                    Some(section) => table
                        .get_mut(section)
                        .and_then(toml::Value::as_table_mut)
                        .expect("inserted above"),
                };
                target.insert(key, as_string);
                if !typed_differently
                    || toml::Value::Table(table.clone())
                        .try_into::<Config>()
                        .is_err()
                {
                    return Err(ConfigError::Parse {
                        origin,
                        message: error.to_string().trim().to_string(),
                    });
                }
            }
        }
        let mut config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e| ConfigError::Parse {
                    origin: "configuration".into(),
                    message: e.to_string(),
                })?;
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces every `<secret property>.file` in the librdkafka sections by the property, read
    /// from the file (see [`SECRET_PROPERTIES`]).
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        for (section, map) in [
            ("kafka", &mut self.kafka),
            ("kafka_consumer", &mut self.kafka_consumer),
            ("kafka_producer", &mut self.kafka_producer),
        ] {
            for property in SECRET_PROPERTIES {
                let key = format!("{property}.file");
                let Some(path) = map.remove(&key) else {
                    continue;
                };
                if map.contains_key(property) {
                    return Err(ConfigError::Invalid {
                        key: format!("{section}.{key}"),
                        value: path,
                        allowed: format!("either `{property}` or `{key}`, not both"),
                    });
                }
                let text =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                        key: format!("{section}.{key}"),
                        property: property.into(),
                        path: path.clone().into(),
                        source,
                    })?;
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                map.insert(property.into(), value.into());
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, value: &dyn std::fmt::Display, allowed: &str| ConfigError::Invalid {
                key: key.into(),
                value: value.to_string(),
                allowed: allowed.into(),
            };
        if self.application_id.is_empty()
            || !self
                .application_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid("application_id", &self.application_id, "letters, digits, `.`, `_` and `-` (it names the consumer group and internal topics)"));
        }
        if self.num_threads == 0 || self.num_threads > 256 {
            return Err(invalid("num_threads", &self.num_threads, "1 to 256"));
        }
        if self.commit_interval_ms == Some(0) {
            return Err(invalid(
                "commit_interval_ms",
                &0,
                "a positive number of milliseconds (100 is Kafka Streams' exactly-once default)",
            ));
        }
        if self.topology.is_empty() {
            return Err(invalid("topology", &"[]", "at least one topology file"));
        }
        if self.replication_factor < 1 {
            return Err(invalid(
                "replication_factor",
                &self.replication_factor,
                "1 or more",
            ));
        }
        Ok(())
    }

    /// The configuration as TOML with secrets redacted, for the startup log.
    pub fn redacted(&self) -> String {
        let mut copy = self.clone();
        for map in [
            &mut copy.kafka,
            &mut copy.kafka_consumer,
            &mut copy.kafka_producer,
        ] {
            for (key, value) in map.iter_mut() {
                if ["password", "secret", "token", "jaas", "key"]
                    .iter()
                    .any(|s| key.contains(s))
                {
                    *value = "<redacted>".into();
                }
            }
        }
        toml::to_string(&copy)
            .unwrap_or_default()
            .replace('\n', "; ")
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(overlay)) => merge(base, overlay),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn parse_env_value(section: Option<&str>, key: &str, value: &str) -> toml::Value {
    if section.is_some_and(|s| PASS_THROUGH.contains(&s)) {
        return toml::Value::String(value.into());
    }
    if key == "topology" {
        return toml::Value::Array(
            value
                .split(',')
                .map(|p| toml::Value::String(p.trim().into()))
                .collect(),
        );
    }
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = value.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compose_stacks_config_loads_with_its_nats_section() {
        let config = Config::load(Some(Path::new("docker/eddy.toml")), []).unwrap();
        assert_eq!(config.nats.servers, "nats://nats:4222");
        assert!(config
            .topology
            .iter()
            .any(|t| t.ends_with("topology/events.toml")));
        let config = Config::load(
            None,
            [(
                "EDDY__NATS__SERVERS".to_string(),
                "nats://a:4222,nats://b:4222".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(config.nats.servers, "nats://a:4222,nats://b:4222");
    }

    #[test]
    fn secrets_come_from_files_named_by_dot_file_and_stay_out_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret-from-file\n").unwrap();
        let config = Config::load(
            None,
            env(&[
                ("EDDY__TOPOLOGY", "[\"t.toml\"]"),
                ("EDDY__KAFKA__SASL_PASSWORD_FILE", secret.to_str().unwrap()),
            ]),
        );
        let config = config.unwrap();
        assert_eq!(config.kafka["sasl.password"], "s3cret-from-file");
        assert!(!config.kafka.contains_key("sasl.password.file"));
        assert!(!config.redacted().contains("s3cret"));
        let missing = Config::load(
            None,
            env(&[
                ("EDDY__TOPOLOGY", "[\"t.toml\"]"),
                ("EDDY__KAFKA__SASL_PASSWORD_FILE", "/nonexistent/secret"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("/nonexistent/secret") && missing.contains("kafka.sasl.password.file"),
            "{missing}"
        );
    }

    #[test]
    fn numeric_looking_values_of_string_settings_stay_strings() {
        let config = Config::load(
            None,
            env(&[
                ("EDDY__GROUP_INSTANCE_ID", "1"),
                ("EDDY__APPLICATION_ID", "2024"),
                ("EDDY__NUM_THREADS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(config.group_instance_id.as_deref(), Some("1"));
        assert_eq!(config.application_id, "2024");
        assert_eq!(config.num_threads, 3);
        let err = Config::load(None, env(&[("EDDY__NUM_THREADS", "many")])).unwrap_err();
        assert!(err.to_string().contains("EDDY__NUM_THREADS"), "{err}");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_defaults_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eddy.toml");
        std::fs::write(&path, "application_id = \"shop\"\nnum_threads = 4\n[http]\nlisten = \"127.0.0.1:1\"\n[kafka]\n\"security.protocol\" = \"PLAINTEXT\"\n").unwrap();
        let config = Config::load(
            Some(&path),
            env(&[
                ("EDDY__NUM_THREADS", "8"),
                ("EDDY__HTTP__ENABLED", "false"),
                ("EDDY__KAFKA__SASL_MECHANISM", "PLAIN"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.application_id, "shop");
        assert_eq!(config.num_threads, 8);
        assert!(!config.http.enabled);
        assert_eq!(config.http.listen, "127.0.0.1:1");
        assert_eq!(config.kafka["security.protocol"], "PLAINTEXT");
        assert_eq!(config.kafka["sasl.mechanism"], "PLAIN");
        assert_eq!(config.commit_interval_ms(), 100);
    }

    #[test]
    fn unknown_keys_name_the_key_and_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eddy.toml");
        std::fs::write(&path, "aplication_id = \"typo\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("eddy.toml") && err.contains("aplication_id"),
            "{err}"
        );
        let err = Config::load(None, env(&[("EDDY__HTTP__LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("EDDY__HTTP__LISTN") && err.contains("listn"),
            "{err}"
        );
    }

    #[test]
    fn at_least_once_defaults_to_kafka_streams_commit_interval() {
        let config = Config::load(
            None,
            env(&[("EDDY__PROCESSING_GUARANTEE", "at_least_once")]),
        )
        .unwrap();
        assert_eq!(config.commit_interval_ms(), 30_000);
        let err = Config::load(None, env(&[("EDDY__PROCESSING_GUARANTEE", "maybe_once")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("maybe_once") || err.contains("exactly_once"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config
            .kafka
            .insert("sasl.password".into(), "hunter2".into());
        assert!(!config.redacted().contains("hunter2"));
    }
}
