//! Deletes the state directories of tasks this instance no longer runs, once they have been left
//! alone for `state_cleanup_delay_ms` (Kafka Streams' `state.cleanup.delay.ms`). Until then a
//! task that comes back (a rebalance that returns it, a restart) reuses its files and restores
//! only the changelog suffix its checkpoint lacks; after it, the disk is given back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often the application's state directory is scanned.
const SCAN_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct StateCleaner {
    /// `<state_dir>/<application.id>`: one directory per task.
    dir: PathBuf,
    delay: Duration,
    next: Instant,
}

impl StateCleaner {
    pub fn new(dir: PathBuf, delay: Duration, now: Instant) -> StateCleaner {
        StateCleaner {
            dir,
            delay,
            next: now + SCAN_EVERY,
        }
    }

    /// When due, deletes every task directory not in `in_use` that nothing has touched for the
    /// delay. Returns the directories deleted.
    pub fn run_if_due(&mut self, in_use: &BTreeSet<String>, now: Instant) -> Vec<PathBuf> {
        if now < self.next {
            return Vec::new();
        }
        self.next = now + SCAN_EVERY;
        self.clean(in_use, SystemTime::now())
    }

    fn clean(&self, in_use: &BTreeSet<String>, now: SystemTime) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut deleted = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if !path.is_dir() || in_use.contains(&name) {
                continue;
            }
            let idle = last_touched(&path).and_then(|t| now.duration_since(t).ok());
            if idle.is_some_and(|idle| idle >= self.delay) {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(task = name, idle_s = idle.map_or(0, |d| d.as_secs()), "state directory of a task no longer run here deleted (state_cleanup_delay_ms)");
                        deleted.push(path);
                    }
                    Err(error) => {
                        tracing::warn!(task = name, %error, "could not delete an unused task's state directory")
                    }
                }
            }
        }
        deleted
    }
}

/// The latest modification of the directory or of anything directly in it.
fn last_touched(dir: &Path) -> Option<SystemTime> {
    let own = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    let files = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok());
    own.into_iter().chain(files).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, by: Duration) {
        let then = SystemTime::now() - by;
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            std::fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap()
                .set_modified(then)
                .unwrap();
        }
        std::fs::File::open(path)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }

    #[test]
    fn unused_task_directories_go_after_the_delay_and_used_ones_stay() {
        let root = tempfile::tempdir().unwrap();
        for task in ["orders-0", "orders-1", "orders-2"] {
            let dir = root.path().join(task);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("000001.sst"), b"x").unwrap();
        }
        age(&root.path().join("orders-0"), Duration::from_secs(3600));
        age(&root.path().join("orders-1"), Duration::from_secs(3600));
        let cleaner = StateCleaner::new(
            root.path().to_path_buf(),
            Duration::from_secs(600),
            Instant::now(),
        );
        let in_use: BTreeSet<String> = ["orders-1".to_string()].into();
        let deleted = cleaner.clean(&in_use, SystemTime::now());
        assert_eq!(deleted, vec![root.path().join("orders-0")]);
        assert!(root.path().join("orders-1").exists(), "in use");
        assert!(root.path().join("orders-2").exists(), "touched recently");
    }
}
