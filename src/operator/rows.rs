//! From a decoded record to the (group, window, delta) updates an aggregation makes: lateness,
//! `explode`, the filter, the group key and window assignment, shared by the operators that read
//! records.

use super::compiled::CompiledAggregation;
use crate::aggregate::{Accumulators, Coupon};
use crate::record::DecodedRecord;
use crate::topology::WindowSpec;
use crate::window::{assign_windows, max_window_end, Window};

/// What to add to one window's accumulators.
pub(crate) enum Delta<'r, 'a> {
    Row(&'r DecodedRecord<'a>, Option<usize>, &'r [Option<Coupon>]),
    Partial(&'r Accumulators),
}

impl Delta<'_, '_> {
    #[inline]
    pub fn apply(&self, spec: &CompiledAggregation, accumulators: &mut Accumulators) {
        match self {
            Delta::Row(record, item, coupons) => {
                accumulators.update(&spec.aggregates, record, *item, coupons)
            }
            Delta::Partial(partial) => accumulators.merge(partial),
        }
    }

    /// New accumulators holding only this delta.
    pub fn to_accumulators(&self, spec: &CompiledAggregation) -> Accumulators {
        let mut accumulators = Accumulators::new(&spec.aggregates);
        self.apply(spec, &mut accumulators);
        accumulators
    }
}

/// Reusable buffers, so assigning rows allocates nothing per record.
#[derive(Default)]
pub(crate) struct RowAssigner {
    group: Vec<u8>,
    coupons: Vec<Option<Coupon>>,
    windows: Vec<Window>,
}

impl RowAssigner {
    /// Calls `update(group, windows, delta)` once for each accepted row of `record`, with the
    /// row's open windows (one group lookup for all of a hopping row's windows). For sessions the
    /// window is the record's own `[t, t + 1)`, for the operator to merge. Returns `Ok(true)`
    /// (and updates nothing) when the record is late for every window it would join.
    #[inline]
    pub fn assign<E>(
        &mut self,
        spec: &CompiledAggregation,
        record: &DecodedRecord<'_>,
        stream_time: i64,
        mut update: impl FnMut(&[u8], &[Window], &Delta<'_, '_>) -> Result<(), E>,
    ) -> Result<bool, E> {
        let t = record.event_time_ms;
        if max_window_end(&spec.window, t) + spec.grace_ms <= stream_time {
            let any_row = if spec.explode {
                (0..record.items.len()).any(|i| spec.accepts(record, Some(i)))
            } else {
                spec.accepts(record, None)
            };
            return Ok(any_row);
        }
        let rows = if spec.explode { record.items.len() } else { 1 };
        for row in 0..rows {
            let item = spec.explode.then_some(row);
            if !spec.accepts(record, item) {
                continue;
            }
            spec.group_key_into(record, item, &mut self.group);
            Accumulators::coupons(&spec.aggregates, record, item, &mut self.coupons);
            let delta = Delta::Row(record, item, &self.coupons);
            self.windows.clear();
            match &spec.window {
                WindowSpec::Session { .. } => self.windows.push(Window {
                    start: t,
                    end: t + 1,
                }),
                window_spec => {
                    let windows = &mut self.windows;
                    assign_windows(window_spec, t, |window| {
                        // Kafka Streams' rule: a hopping record still updates its windows that are open.
                        if window.end + spec.grace_ms > stream_time {
                            windows.push(window);
                        }
                    });
                }
            }
            update(&self.group, &self.windows, &delta)?;
        }
        Ok(false)
    }
}
