//! One task's records of a batch, copied out of the consumer's fetch buffers into one allocation.
//! The copy is what lets the workers process a batch while the loop polls the next: the
//! consumer's messages are released as soon as they are copied, and nothing the workers read
//! borrows from the consumer.

use crate::task::InputRecord;
use std::ops::Range;

pub(crate) struct CopiedRecords {
    bytes: Vec<u8>,
    records: Vec<CopiedRecord>,
}

struct CopiedRecord {
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
    timestamp_ms: Option<i64>,
    offset: i64,
    subject: Option<Range<usize>>,
}

impl CopiedRecords {
    pub fn with_capacity(records: usize, bytes: usize) -> CopiedRecords {
        CopiedRecords {
            bytes: Vec::with_capacity(bytes),
            records: Vec::with_capacity(records),
        }
    }

    pub fn push(&mut self, record: &InputRecord<'_>) {
        let key = record.key.map(|key| self.copy(key));
        let payload = record.payload.map(|payload| self.copy(payload));
        let subject = record.subject.map(|subject| self.copy(subject.as_bytes()));
        self.records.push(CopiedRecord {
            key,
            payload,
            timestamp_ms: record.timestamp_ms,
            offset: record.offset,
            subject,
        });
    }

    fn copy(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The offset of the last record, if any.
    pub fn last_offset(&self) -> Option<i64> {
        self.records.last().map(|record| record.offset)
    }

    /// Takes the records from index `at` on into a copy of their own (what a task did not get
    /// to within its batch's time).
    pub fn split_off(&mut self, at: usize) -> CopiedRecords {
        let mut rest = CopiedRecords::with_capacity(self.records.len().saturating_sub(at), 0);
        for record in self.iter().skip(at) {
            rest.push(&record);
        }
        self.records.truncate(at);
        rest
    }

    /// The records in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = InputRecord<'_>> {
        self.records.iter().map(|record| InputRecord {
            key: record.key.clone().map(|range| &self.bytes[range]),
            payload: record.payload.clone().map(|range| &self.bytes[range]),
            timestamp_ms: record.timestamp_ms,
            offset: record.offset,
            // Copied from a &str, so the bytes are UTF-8.
            subject: record
                .subject
                .clone()
                .map(|range| std::str::from_utf8(&self.bytes[range]).unwrap_or_default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_pushed_keys_and_payloads_absent_or_empty_included() {
        let pushed = [
            InputRecord {
                key: Some(b"user-1"),
                payload: Some(br#"{"a":1}"#),
                timestamp_ms: Some(1_700_000_000_000),
                offset: 7,
                subject: None,
            },
            InputRecord {
                key: None,
                payload: Some(b""),
                timestamp_ms: None,
                offset: 8,
                subject: None,
            },
            InputRecord {
                key: Some(b""),
                payload: None,
                timestamp_ms: Some(-1),
                offset: 10,
                subject: None,
            },
        ];
        let mut copied = CopiedRecords::with_capacity(1, 4);
        assert!(copied.is_empty());
        for record in &pushed {
            copied.push(record);
        }
        assert_eq!(copied.len(), 3);
        let back: Vec<InputRecord<'_>> = copied.iter().collect();
        for (got, want) in back.iter().zip(&pushed) {
            assert_eq!(got.key, want.key);
            assert_eq!(got.payload, want.payload);
            assert_eq!(got.timestamp_ms, want.timestamp_ms);
            assert_eq!(got.offset, want.offset);
        }
        // Split, then new records pushed after the rest: the same records, in order.
        let mut rest = copied.split_off(1);
        assert_eq!(copied.len(), 1);
        assert_eq!(
            (copied.last_offset(), rest.last_offset()),
            (Some(7), Some(10))
        );
        rest.push(&pushed[0]);
        let offsets: Vec<i64> = rest.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [8, 10, 7]);
        assert_eq!(rest.iter().next().unwrap().payload, Some(&b""[..]));
        assert_eq!(rest.iter().nth(1).unwrap().key, Some(&b""[..]));
        assert_eq!(rest.iter().nth(2).unwrap().key, Some(&b"user-1"[..]));
    }
}
