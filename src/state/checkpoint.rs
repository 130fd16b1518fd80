//! The checkpoint file: which changelog offset a task's local RocksDB files correspond to.
//!
//! It is written only after a clean close (commit, then RocksDB flush) and deleted when a task
//! starts processing. After a crash there is none; the position each store records with its
//! writes ([`super::StorePosition`]) vouches for the files instead.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = ".checkpoint";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u8,
    /// Store name -> the changelog offset to resume restoring from.
    pub changelog_offsets: BTreeMap<String, i64>,
}

impl Checkpoint {
    /// 2: the files hold each store's close-time index beside its values. Files vouched for by
    /// a version-1 checkpoint lack it, so they are wiped and restored from the changelog.
    pub const VERSION: u8 = 2;

    fn path(task_dir: &Path) -> PathBuf {
        task_dir.join(FILE_NAME)
    }

    /// Reads a checkpoint; a missing, unreadable or other-version file means "none".
    pub fn read(task_dir: &Path) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(Self::path(task_dir)).ok()?;
        serde_json::from_str::<Checkpoint>(&text)
            .ok()
            .filter(|c| c.version == Self::VERSION)
    }

    /// Reads a checkpoint written less than `max_age` ago. An older one may describe files that
    /// missed tombstones compaction has since removed from the changelog
    /// (`delete.retention.ms`): replaying the suffix would leave those keys alive.
    pub fn read_fresh(task_dir: &Path, max_age: std::time::Duration) -> Option<Checkpoint> {
        let written = std::fs::metadata(Self::path(task_dir))
            .and_then(|m| m.modified())
            .ok()?;
        let age = std::time::SystemTime::now()
            .duration_since(written)
            .unwrap_or_default();
        if age > max_age {
            tracing::info!(dir = %task_dir.display(), age_s = age.as_secs(), "checkpoint older than checkpoint_max_age_ms ignored; the stores are restored from scratch");
            return None;
        }
        Self::read(task_dir)
    }

    pub fn write(task_dir: &Path, changelog_offsets: BTreeMap<String, i64>) -> std::io::Result<()> {
        let checkpoint = Checkpoint {
            version: Self::VERSION,
            changelog_offsets,
        };
        // Written whole, synced, then renamed and the directory synced: a crash leaves either the
        // old state (no checkpoint: full restore) or this complete file, never a torn one.
        let tmp = task_dir.join(".checkpoint.tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&checkpoint).expect("serializable"))?;
            file.sync_all()?;
        }
        std::fs::rename(tmp, Self::path(task_dir))?;
        std::fs::File::open(task_dir)?.sync_all()
    }

    /// Whether this checkpoint can describe a changelog whose offsets run from `low` to `high`
    /// (exclusive) for `store`: an offset outside that range means the changelog was recreated or
    /// truncated, and the local files must be wiped and restored instead.
    pub fn fits(&self, store: &str, low: i64, high: i64) -> bool {
        self.changelog_offsets
            .get(store)
            .is_none_or(|&offset| (low..=high).contains(&offset))
    }

    pub fn remove(task_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(task_dir));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_checkpoint_older_than_the_maximum_age_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        super::Checkpoint::write(dir.path(), [("s".to_string(), 5)].into()).unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert!(super::Checkpoint::read_fresh(dir.path(), day).is_some());
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(".checkpoint"))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - 2 * day)
            .unwrap();
        assert!(super::Checkpoint::read_fresh(dir.path(), day).is_none());
        assert!(
            super::Checkpoint::read(dir.path()).is_some(),
            "still on disk"
        );
    }

    #[test]
    fn a_checkpoint_fits_only_its_changelogs_offset_range() {
        let checkpoint = super::Checkpoint {
            version: super::Checkpoint::VERSION,
            changelog_offsets: [("s".to_string(), 120)].into(),
        };
        assert!(checkpoint.fits("s", 0, 120));
        assert!(checkpoint.fits("s", 100, 500));
        assert!(
            !checkpoint.fits("s", 0, 50),
            "the changelog was recreated: shorter than the checkpoint"
        );
        assert!(
            !checkpoint.fits("s", 200, 300),
            "truncated past the checkpoint"
        );
        assert!(
            checkpoint.fits("other", 0, 0),
            "a store without an offset restores from the start"
        );
    }

    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()), None);
        Checkpoint::write(dir.path(), BTreeMap::from([("s".to_string(), 42)])).unwrap();
        assert_eq!(
            Checkpoint::read(dir.path()).unwrap().changelog_offsets["s"],
            42
        );
        Checkpoint::remove(dir.path());
        assert_eq!(Checkpoint::read(dir.path()), None);
    }
}
