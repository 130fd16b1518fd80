//! Runs one polled batch across worker threads. Each task belongs to exactly one worker for the
//! batch, so no lock is shared between tasks on the hot path.

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

/// Processes every task's records, on up to `threads` threads.
pub(crate) fn process_batch(work: &mut [TaskWork<'_, '_>], threads: usize) {
    if threads <= 1 || work.len() <= 1 {
        work.iter_mut().for_each(run_one);
        return;
    }
    // Largest first, dealt round-robin, keeps threads evenly loaded.
    work.sort_by_key(|w| std::cmp::Reverse(w.records.len()));
    let mut shares: Vec<Vec<&mut TaskWork<'_, '_>>> =
        (0..threads.min(work.len())).map(|_| Vec::new()).collect();
    let count = shares.len();
    for (i, item) in work.iter_mut().enumerate() {
        shares[i % count].push(item);
    }
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || share.into_iter().for_each(run_one));
        }
    });
}
