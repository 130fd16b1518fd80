//! The demo's view of output topics: the latest value of each (aggregation, group, window).

use crate::task::AggregateRecord;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Default)]
pub struct LiveTable {
    /// aggregation -> window start -> group -> latest record
    rows: BTreeMap<String, BTreeMap<i64, BTreeMap<String, AggregateRecord>>>,
    pub records_read: u64,
}

impl LiveTable {
    pub fn add(&mut self, record: AggregateRecord) {
        self.records_read += 1;
        let group = serde_json::Value::Object(record.group.clone()).to_string();
        let windows = self.rows.entry(record.aggregation.clone()).or_default();
        windows
            .entry(record.window.start)
            .or_default()
            .insert(group, record);
        while windows.len() > 3 {
            windows.pop_first();
        }
    }

    fn time_of(ms: i64) -> String {
        let text = crate::record::format_rfc3339_ms(ms);
        text.get(11..19).unwrap_or(&text).to_string()
    }

    /// The latest windows of each aggregation, biggest groups first.
    pub fn render(&self, max_groups: usize) -> String {
        let mut out = String::new();
        for (aggregation, windows) in &self.rows {
            let Some((_, groups)) = windows.iter().next_back() else {
                continue;
            };
            let mut records: Vec<&AggregateRecord> = groups.values().collect();
            let size = |r: &AggregateRecord| {
                r.values
                    .values()
                    .next()
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0)
            };
            records.sort_by(|a, b| size(b).total_cmp(&size(a)));
            let _ = writeln!(
                out,
                "{aggregation}  ({} groups in the latest window)",
                groups.len()
            );
            for record in records.iter().take(max_groups) {
                let group = if record.group.is_empty() {
                    "(all)".to_string()
                } else {
                    record
                        .group
                        .values()
                        .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let values: Vec<String> = record
                    .values
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {}-{}  {:<16} {}{}",
                    Self::time_of(record.window.start),
                    Self::time_of(record.window.end),
                    group,
                    values.join("  "),
                    if record.is_final { "" } else { "  (update)" }
                );
            }
        }
        out
    }
}
