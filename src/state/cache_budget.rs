//! One byte budget for the write-back caches of all stores of an instance (Kafka Streams'
//! `statestore.cache.max.bytes`). Each store counts the bytes of its cached entries and, after each
//! commit, evicts clean ones down to its share: the budget divided by the stores open now.
//! Entries changed since the last commit are never evicted (they are the next commit's writes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A byte budget shared by stores.
///
/// # Examples
/// ```
/// use eddy::state::CacheBudget;
/// let budget = CacheBudget::new(1000);
/// let a = budget.join();
/// assert_eq!(a.bytes(), 1000);
/// let b = budget.join();
/// assert_eq!((a.bytes(), b.bytes()), (500, 500));
/// drop(b);
/// assert_eq!(a.bytes(), 1000);
/// ```
#[derive(Clone, Debug)]
pub struct CacheBudget {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limit: usize,
    stores: AtomicUsize,
}

impl CacheBudget {
    pub fn new(limit_bytes: usize) -> CacheBudget {
        CacheBudget {
            inner: Arc::new(Shared {
                limit: limit_bytes,
                stores: AtomicUsize::new(0),
            }),
        }
    }

    /// The whole budget.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// A store's place in the budget, for as long as the store is open.
    pub fn join(&self) -> CacheShare {
        self.inner.stores.fetch_add(1, Ordering::Relaxed);
        CacheShare {
            budget: self.clone(),
        }
    }
}

/// One store's share of a [`CacheBudget`].
#[derive(Debug)]
pub struct CacheShare {
    budget: CacheBudget,
}

impl CacheShare {
    /// The bytes this store may keep cached after a commit.
    pub fn bytes(&self) -> usize {
        let stores = self.budget.inner.stores.load(Ordering::Relaxed).max(1);
        self.budget.inner.limit / stores
    }
}

impl Drop for CacheShare {
    fn drop(&mut self) {
        self.budget.inner.stores.fetch_sub(1, Ordering::Relaxed);
    }
}
