//! Runs one polled batch across a pool of worker threads that lives as long as the instance.
//! Each task belongs to exactly one worker for the batch, so no lock is shared between tasks on
//! the hot path.

use super::task_slot::TaskSlot;
use crate::task::{InputRecord, TaskError, TaskOutput};

/// One task's share of a batch.
pub(crate) struct TaskWork<'s, 'r> {
    pub slot: &'s mut TaskSlot,
    pub records: Vec<InputRecord<'r>>,
    pub output: TaskOutput,
    pub result: Result<(), TaskError>,
}

fn run_one(work: &mut TaskWork<'_, '_>) {
    let _span = tracing::debug_span!("task", task = %work.slot.task.id).entered();
    for record in &work.records {
        if let Err(error) = work.slot.task.process(*record, &mut work.output) {
            work.result = Err(error);
            return;
        }
    }
}

/// The instance's worker threads (rayon's work-stealing pool: threads are started once, and a
/// task's records are processed by whichever worker is free).
pub(crate) struct WorkerPool {
    pool: Option<rayon::ThreadPool>,
}

impl WorkerPool {
    /// `threads` workers; with one, batches run on the calling thread.
    pub fn new(threads: usize) -> Result<WorkerPool, crate::Error> {
        if threads <= 1 {
            return Ok(WorkerPool { pool: None });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("eddy-worker-{i}"))
            .build()
            .map_err(|e| crate::Error::WorkerThreads {
                threads,
                reason: e.to_string(),
            })?;
        Ok(WorkerPool { pool: Some(pool) })
    }

    /// Processes every task's records.
    pub fn process_batch(&self, work: &mut [TaskWork<'_, '_>]) {
        match &self.pool {
            Some(pool) if work.len() > 1 => {
                use rayon::prelude::*;
                // Largest first, so the last task to start is a short one.
                work.sort_by_key(|w| std::cmp::Reverse(w.records.len()));
                pool.install(|| work.par_iter_mut().with_max_len(1).for_each(run_one));
            }
            _ => work.iter_mut().for_each(run_one),
        }
    }
}
