//! Operators: what one aggregation does inside one task, behind one small trait.
//!
//! A task runs one operator per aggregation it holds:
//! - [`WindowAggregate`] keeps windows in a store and closes them: the whole aggregation when it
//!   groups by the source key, or stage 2 of a repartitioned one, merging partials;
//! - [`PartialAggregate`] is stage 1 of a repartitioned aggregation: it pre-aggregates a commit
//!   interval's rows in memory and sends them, with its stream time, to the repartition topic.
//!
//! Only [`Operator::process`] is required; the lifecycle hooks default to doing nothing, as in
//! Arroyo's operator trait.

mod compiled;
mod open_sessions;
mod output;
mod partial_aggregate;
mod repartition;
mod rows;
mod window_aggregate;

pub use compiled::CompiledAggregation;
pub use output::{
    AggregateRecord, OutgoingKind, OutgoingRecord, PendingStateWrites, TaskOutput, WindowBounds,
};
pub use partial_aggregate::PartialAggregate;
pub use repartition::{partition_for, RepartitionMessage};
pub use window_aggregate::WindowAggregate;

use crate::aggregate::Accumulators;
use crate::record::DecodedRecord;
use crate::state::{StateError, WindowStore};
use crate::window::Window;

/// What an operator is handed.
#[derive(Clone, Copy)]
pub enum OperatorInput<'r, 'a> {
    /// A decoded input record (operators of input tasks).
    Record(&'r DecodedRecord<'a>),
    /// A pre-aggregated (group, window) from upstream (the merge side).
    Partial {
        group: &'r [u8],
        window: Window,
        accumulators: &'r Accumulators,
    },
    /// An upstream partition's stream time moved; `idle`: it is read to its end and quiet, so it
    /// no longer holds windows back.
    UpstreamTime {
        upstream_partition: u32,
        stream_time: i64,
        idle: bool,
    },
}

/// The task's view at a commit tick.
#[derive(Clone, Copy, Debug)]
pub struct FlushContext {
    /// The task's stream time (merge operators use their upstream watermarks instead).
    pub stream_time: i64,
    pub task_partition: i32,
    /// The task's input partition is quiet and read to its end.
    pub idle: bool,
}

/// Counters a task reads after each commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperatorStats {
    pub late_records: u64,
    pub emitted_final: u64,
    pub emitted_update: u64,
}

/// One aggregation inside one task.
pub trait Operator: Send {
    /// The aggregation this operator computes.
    fn spec(&self) -> &CompiledAggregation;

    /// Applies one input. Returns whether it was late (its windows had closed).
    fn process(
        &mut self,
        input: OperatorInput<'_, '_>,
        stream_time: i64,
    ) -> Result<bool, StateError>;

    /// At each commit: close what time allows, emit, and move this interval's changes (records
    /// to produce, store writes to apply after the commit) into `out`.
    fn on_flush(
        &mut self,
        _context: FlushContext,
        _out: &mut TaskOutput,
    ) -> Result<(), StateError> {
        Ok(())
    }

    /// The transaction holding everything up to the last [`Operator::on_flush`] committed.
    /// Processing may have gone on since that flush (while the transaction committed): what it
    /// applied belongs to the next transaction.
    fn on_commit(&mut self) {}

    /// The transaction was aborted: forget uncommitted work and return to the committed state at
    /// `stream_time` (the task replays input from its committed offsets).
    fn on_rollback(&mut self, _stream_time: i64) -> Result<(), StateError> {
        Ok(())
    }

    /// Rebuild what is derived from committed state (after a restore, or time restored from
    /// commit metadata). `stream_time` is the task's committed time.
    fn on_restore(&mut self, _stream_time: i64) -> Result<(), StateError> {
        Ok(())
    }

    /// The operator's store, if it keeps one.
    fn store(&self) -> Option<&WindowStore> {
        None
    }

    fn store_mut(&mut self) -> Option<&mut WindowStore> {
        None
    }

    /// The merge side's upstream watermarks, as saved with committed offsets.
    fn upstream_watermarks(&self) -> Option<&[i64]> {
        None
    }

    /// The watermark windows were closed at; `None` for operators that close nothing.
    fn closed_through(&self) -> Option<i64> {
        None
    }

    /// Restores the upstream watermarks and the closing watermark saved with committed offsets.
    fn restore_upstream_watermarks(&mut self, _watermarks: &[i64], _closed_through: Option<i64>) {}

    /// Restores the closing watermark an input task's commit recorded: a local aggregation whose
    /// closing had not caught up with the task's stream time.
    fn restore_closed_through(&mut self, _closed_through: i64) {}

    /// Counters since the last call.
    fn take_stats(&mut self) -> OperatorStats {
        OperatorStats::default()
    }

    /// Number of open (group, window) entries.
    fn open_windows(&self) -> usize {
        0
    }
}
