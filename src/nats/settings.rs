//! The [nats] configuration turned into a connection.

use super::NatsError;
use crate::config::NatsConfig;
use async_nats::ConnectOptions;
use std::path::Path;
use std::time::Duration;

/// How to reach the NATS servers, checked once at start.
#[derive(Clone, Debug)]
pub struct NatsSettings {
    pub servers: Vec<String>,
    config: NatsConfig,
}

fn read_secret(key: &'static str, path: &Path) -> Result<String, NatsError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| NatsError::Credentials {
            key,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

impl NatsSettings {
    pub fn from_config(config: &NatsConfig) -> NatsSettings {
        NatsSettings {
            servers: config
                .servers
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            config: config.clone(),
        }
    }

    pub fn servers_text(&self) -> String {
        self.servers.join(",")
    }

    /// The client options: credentials, TLS, and reconnecting forever (eddy decides when to give up).
    pub(super) async fn options(&self, name: &str) -> Result<ConnectOptions, NatsError> {
        let c = &self.config;
        let mut options = match &c.creds_file {
            Some(path) => ConnectOptions::new()
                .credentials_file(path)
                .await
                .map_err(|e| NatsError::Credentials {
                    key: "creds_file",
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?,
            None => ConnectOptions::new(),
        };
        if let Some(path) = &c.nkey_seed_file {
            options = options.nkey(read_secret("nkey_seed_file", path)?);
        }
        if let Some(user) = &c.user {
            let password = match &c.password_file {
                Some(path) => read_secret("password_file", path)?,
                None => String::new(),
            };
            options = options.user_and_password(user.clone(), password);
        }
        if let Some(ca) = &c.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&c.tls_cert_file, &c.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options
            .require_tls(c.require_tls)
            .connection_timeout(Duration::from_millis(c.connect_timeout_ms.max(1)))
            .max_reconnects(None)
            .name(name))
    }
}
