//! Runs a polled batch on a pool of worker threads that lives as long as the instance, while the
//! loop goes on polling the next one. Each task belongs to exactly one worker for the batch, so no
//! lock is shared between tasks on the hot path, and a task is out of the loop's hands (moved into
//! the batch) until the batch is waited for.

use super::copied_records::CopiedRecords;
use super::ports::Clock;
use super::task_slot::TaskSlot;
use crate::task::{TaskError, TaskOutput};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

/// One task's share of a batch.
pub(crate) struct TaskWork {
    pub slot: TaskSlot,
    pub records: CopiedRecords,
    pub output: TaskOutput,
    pub result: Result<(), TaskError>,
}

impl TaskWork {
    pub fn new(slot: TaskSlot, records: CopiedRecords) -> TaskWork {
        TaskWork {
            slot,
            records,
            output: TaskOutput::default(),
            result: Ok(()),
        }
    }
}

/// When a batch's tasks stop, on the instance's clock: each processes its records until it is
/// past, and leaves the rest in its slot for the next batch ([`TaskSlot::carried`]), so that a
/// task with a large backlog (one just taken over) does not hold the batch, and every task's
/// commit, for longer than about the commit interval.
#[derive(Clone)]
pub(crate) struct BatchDeadline {
    pub at: std::time::Instant,
    pub clock: std::sync::Arc<dyn Clock>,
}

/// Records processed between two looks at the clock.
const CLOCK_EVERY: usize = 64;

fn run_one(work: &mut TaskWork, deadline: &BatchDeadline) {
    let _span = tracing::debug_span!("task", task = %work.slot.task.id).entered();
    let mut stopped_at = None;
    for (index, record) in work.records.iter().enumerate() {
        // After the first record, and then every CLOCK_EVERY: every task makes progress.
        let look = index == 1 || (index > 0 && index % CLOCK_EVERY == 0);
        if look && deadline.clock.now() >= deadline.at {
            stopped_at = Some(index);
            break;
        }
        if let Err(error) = work.slot.task.process(record, &mut work.output) {
            work.result = Err(error);
            return;
        }
    }
    if let Some(index) = stopped_at {
        work.slot.carried = Some(work.records.split_off(index));
    }
}

/// A batch handed to the workers.
pub(crate) enum InFlight {
    /// Processed on the calling thread (one worker thread configured).
    Done(Vec<TaskWork>),
    Running {
        tasks: usize,
        done: mpsc::Receiver<std::thread::Result<Vec<TaskWork>>>,
    },
}

impl InFlight {
    /// How many tasks the batch holds.
    pub fn tasks(&self) -> usize {
        match self {
            InFlight::Done(work) => work.len(),
            InFlight::Running { tasks, .. } => *tasks,
        }
    }

    /// Blocks until every task of the batch has processed its records, and gives the tasks back.
    /// A panic on a worker resumes here, as if the batch had run on this thread.
    pub fn wait(self) -> Vec<TaskWork> {
        match self {
            InFlight::Done(work) => work,
            InFlight::Running { done, .. } => match done.recv() {
                Ok(Ok(work)) => work,
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(mpsc::RecvError) => panic!("a worker thread dropped a batch unfinished"),
            },
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

    /// Starts processing every task's records and returns at once (with one thread, after the
    /// work is done).
    pub fn start(&self, mut work: Vec<TaskWork>, deadline: BatchDeadline) -> InFlight {
        let Some(pool) = &self.pool else {
            work.iter_mut().for_each(|w| run_one(w, &deadline));
            return InFlight::Done(work);
        };
        // Largest first, so the last task to start is a short one.
        work.sort_by_key(|w| std::cmp::Reverse(w.records.len()));
        let tasks = work.len();
        let (finished, done) = mpsc::sync_channel(1);
        pool.spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(move || {
                use rayon::prelude::*;
                work.par_iter_mut()
                    .with_max_len(1)
                    .for_each(|w| run_one(w, &deadline));
                work
            }));
            // The loop may have stopped waiting (it is unwinding itself): nothing to hand back.
            let _ = finished.send(result);
        });
        InFlight::Running { tasks, done }
    }
}
