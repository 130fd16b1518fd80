//! Liveness and readiness, shared between the runtime and the HTTP endpoints.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Ready means: a member of the group, with every assigned task restored and running.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    joined: AtomicBool,
    restoring: AtomicUsize,
    stopping: AtomicBool,
    /// The broker is unreachable: running, but not serving fresh results.
    degraded: AtomicBool,
}

impl Health {
    pub fn set_joined(&self, joined: bool) {
        self.inner.joined.store(joined, Ordering::Relaxed);
        self.export();
    }
    pub fn set_restoring(&self, tasks: usize) {
        self.inner.restoring.store(tasks, Ordering::Relaxed);
        self.export();
    }
    pub fn set_degraded(&self, degraded: bool) {
        self.inner.degraded.store(degraded, Ordering::Relaxed);
        self.export();
    }
    pub fn set_stopping(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.export();
    }
    pub fn is_ready(&self) -> bool {
        self.inner.joined.load(Ordering::Relaxed)
            && self.inner.restoring.load(Ordering::Relaxed) == 0
            && !self.inner.stopping.load(Ordering::Relaxed)
            && !self.inner.degraded.load(Ordering::Relaxed)
    }
    /// `eddy_ready`, for the "not ready for long" alert.
    fn export(&self) {
        super::events::Readiness(self.is_ready()).emit();
    }
    pub fn describe(&self) -> String {
        format!(
            "{{\"ready\":{},\"joined\":{},\"restoring_tasks\":{},\"stopping\":{},\"broker_unreachable\":{}}}",
            self.is_ready(),
            self.inner.joined.load(Ordering::Relaxed),
            self.inner.restoring.load(Ordering::Relaxed),
            self.inner.stopping.load(Ordering::Relaxed),
            self.inner.degraded.load(Ordering::Relaxed)
        )
    }
}
