//! What `eddy --version` reports: eddy's version and the native libraries linked into it.

/// `0.1.0 (librdkafka 2.12.1, RocksDB 11.8.1)`.
pub fn version_line() -> String {
    format!(
        "{} (librdkafka {}, RocksDB {})",
        env!("CARGO_PKG_VERSION"),
        crate::kafka::librdkafka_version(),
        crate::state::ROCKSDB_VERSION
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reported_rocksdb_version_is_the_locked_one() {
        let lock = include_str!("../Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"librocksdb-sys\""))
            .and_then(|p| p.split('+').nth(1))
            .and_then(|v| v.split('"').next())
            .expect("librocksdb-sys in Cargo.lock");
        assert_eq!(locked, crate::state::ROCKSDB_VERSION);
        assert!(super::version_line().contains("librdkafka 2."));
    }
}
