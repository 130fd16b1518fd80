//! Stage 1 of a repartitioned aggregation: a commit interval's rows pre-aggregated in memory per
//! (group, window), sent to the repartition topic at the commit with this partition's stream time.

use super::compiled::CompiledAggregation;
use super::output::{OutgoingKind, OutgoingRecord, TaskOutput};
use super::repartition::{partition_for, RepartitionMessage};
use super::rows::{Delta, RowAssigner};
use super::{FlushContext, Operator, OperatorInput, OperatorStats};
use crate::aggregate::Accumulators;
use crate::fixed_hash::HashMap;
use crate::state::{encode_accumulators, StateError};
use crate::topology::WindowSpec;
use crate::window::{sessions, Window, IDLE_REANNOUNCE};
use std::sync::Arc;
use std::time::Instant;

pub struct PartialAggregate {
    spec: Arc<CompiledAggregation>,
    partials: HashMap<Vec<u8>, Vec<(Window, Accumulators)>>,
    upstream_partition: u32,
    downstream_partitions: i32,
    last_watermark_sent: i64,
    /// Whether the last announcement downstream was `Idle`, and when it was sent.
    idle_announced: bool,
    idle_announced_at: Option<Instant>,
    /// After a rollback the last announcement is unknown: send the next one whatever it is.
    resend: bool,
    rows: RowAssigner,
    stats: OperatorStats,
}

impl PartialAggregate {
    /// `upstream_partition`: this task's index among the merge side's upstreams;
    /// `downstream_partitions`: the repartition topic's partition count.
    pub fn new(
        spec: Arc<CompiledAggregation>,
        upstream_partition: u32,
        downstream_partitions: i32,
    ) -> PartialAggregate {
        PartialAggregate {
            spec,
            partials: HashMap::default(),
            upstream_partition,
            downstream_partitions,
            last_watermark_sent: i64::MIN,
            idle_announced: false,
            idle_announced_at: None,
            resend: false,
            rows: RowAssigner::default(),
            stats: OperatorStats::default(),
        }
    }

    fn add(
        partials: &mut HashMap<Vec<u8>, Vec<(Window, Accumulators)>>,
        spec: &CompiledAggregation,
        group: &[u8],
        assigned: &[Window],
        delta: &Delta<'_, '_>,
    ) {
        let windows = partials.entry_ref(group).or_default();
        let WindowSpec::Session { gap_ms } = spec.window else {
            for &new in assigned {
                match windows.iter_mut().find(|(w, _)| *w == new) {
                    Some((_, acc)) => delta.apply(spec, acc),
                    None => windows.push((new, delta.to_accumulators(spec))),
                }
            }
            return;
        };
        let Some(&new) = assigned.first() else {
            return;
        };
        let Ok(()) = sessions::add(
            &mut PartialSessions {
                windows,
                spec,
                delta,
            },
            new,
            gap_ms,
        );
    }

    fn send(
        &self,
        out: &mut TaskOutput,
        topic: &str,
        partition: i32,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
    ) {
        out.records.push(OutgoingRecord {
            kind: OutgoingKind::Repartition,
            topic: topic.to_string(),
            partition: Some(partition),
            key,
            value: Some(value),
            headers: Vec::new(),
            window_end_ms: None,
        });
    }
}

impl Operator for PartialAggregate {
    fn spec(&self) -> &CompiledAggregation {
        &self.spec
    }

    fn process(
        &mut self,
        input: OperatorInput<'_, '_>,
        stream_time: i64,
    ) -> Result<bool, StateError> {
        let OperatorInput::Record(record) = input else {
            return Ok(false);
        };
        let (spec, partials) = (&*self.spec, &mut self.partials);
        let late = self
            .rows
            .assign(spec, record, stream_time, |group, windows, delta| {
                Self::add(partials, spec, group, windows, delta);
                Ok::<_, StateError>(())
            })?;
        if late {
            self.stats.late_records += 1;
        }
        Ok(late)
    }

    fn on_flush(&mut self, context: FlushContext, out: &mut TaskOutput) -> Result<(), StateError> {
        let spec = self.spec.clone();
        let topic = spec
            .repartition_topic
            .as_deref()
            .expect("a partial aggregation has a repartition topic");
        let mut partials = std::mem::take(&mut self.partials);
        for (group, windows) in partials.drain() {
            let partition = partition_for(&group, self.downstream_partitions);
            for (window, accumulators) in windows {
                let mut bytes = Vec::new();
                encode_accumulators(&accumulators, &mut bytes);
                let message = RepartitionMessage::Partial {
                    upstream_partition: self.upstream_partition,
                    window,
                    accumulators: bytes,
                };
                self.send(out, topic, partition, Some(group.clone()), message.encode());
            }
        }
        // Keep the map's allocation for the next interval.
        self.partials = partials;
        let stream_time = context.stream_time;
        let announce = if context.idle {
            // Repeated while idle: a merge side that saw another upstream come back waits for
            // this confirmation before it leaves this one out again.
            let due = self
                .idle_announced_at
                .is_none_or(|at| at.elapsed() >= IDLE_REANNOUNCE);
            (!self.idle_announced || self.resend || due).then_some(RepartitionMessage::Idle {
                upstream_partition: self.upstream_partition,
                stream_time,
            })
        } else {
            (stream_time > self.last_watermark_sent || self.idle_announced || self.resend)
                .then_some(RepartitionMessage::Watermark {
                    upstream_partition: self.upstream_partition,
                    stream_time,
                })
        };
        if let Some(message) = announce {
            tracing::debug!(aggregation = %spec.name, ?message, "upstream announces");
            let message = message.encode();
            for partition in 0..self.downstream_partitions {
                self.send(out, topic, partition, None, message.clone());
            }
            self.last_watermark_sent = self.last_watermark_sent.max(stream_time);
            self.idle_announced = context.idle;
            self.idle_announced_at = context.idle.then(Instant::now);
            self.resend = false;
        }
        Ok(())
    }

    /// Partials are dropped; the task replays their records from the committed offsets.
    fn on_rollback(&mut self, stream_time: i64) -> Result<(), StateError> {
        self.last_watermark_sent = stream_time;
        self.resend = true;
        self.partials.clear();
        Ok(())
    }

    fn on_restore(&mut self, _stream_time: i64) -> Result<(), StateError> {
        self.partials.clear();
        Ok(())
    }

    fn take_stats(&mut self) -> OperatorStats {
        std::mem::take(&mut self.stats)
    }

    fn open_windows(&self) -> usize {
        self.partials.values().map(Vec::len).sum()
    }
}

/// A group's partial sessions, in memory until the next flush.
struct PartialSessions<'a, 'r, 'd> {
    windows: &'a mut Vec<(Window, Accumulators)>,
    spec: &'a CompiledAggregation,
    delta: &'a Delta<'r, 'd>,
}

impl sessions::GroupSessions for PartialSessions<'_, '_, '_> {
    type Error = std::convert::Infallible;

    fn bounds(&mut self) -> Result<Vec<Window>, Self::Error> {
        Ok(self.windows.iter().map(|(w, _)| *w).collect())
    }

    fn add_inside(&mut self, index: usize) -> Result<(), Self::Error> {
        self.delta.apply(self.spec, &mut self.windows[index].1);
        Ok(())
    }

    fn join(&mut self, indices: &[usize], merged: Window) -> Result<(), Self::Error> {
        let mut accumulators = self.delta.to_accumulators(self.spec);
        for &i in indices.iter().rev() {
            let (_, previous) = self.windows.swap_remove(i);
            accumulators.merge(&previous);
        }
        self.windows.push((merged, accumulators));
        Ok(())
    }
}
