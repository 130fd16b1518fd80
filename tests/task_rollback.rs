//! A merge task rolled back after an aborted transaction returns to its committed upstream
//! watermarks, so the partials replayed after the abort are not mistaken for late ones.

use eddy::task::{
    CompiledTopology, InputRecord, RepartitionMessage, StateLocation, TaskId, TaskOutput,
};
use eddy::topology::*;
use std::collections::HashMap;

#[test]
fn rollback_restores_the_merge_sides_upstream_watermarks() {
    let topology = Topology::builder()
        .source(
            SourceBuilder::new("events", "events", Schema::Json)
                .time_field("ts", TimeFormat::EpochMillis)
                .build(),
        )
        .aggregation(
            AggregationBuilder::new("by_kind", "events", "out")
                .group_by("kind")
                .aggregate("n", AggregateKind::Count)
                .build(),
        )
        .build()
        .unwrap();
    let compiled = CompiledTopology::new("app", topology);
    let partitions = HashMap::from([("events".to_string(), 2)]);
    let id = TaskId {
        topic: "app-by_kind-repartition".into(),
        partition: 0,
    };
    let (mut task, _) = compiled
        .create_task(&id, &partitions, &StateLocation::Memory)
        .unwrap();
    let mut offset = 0;
    let mut deliver = |task: &mut eddy::task::StreamTask, message: RepartitionMessage| {
        let bytes = message.encode();
        offset += 1;
        task.process(
            InputRecord {
                payload: Some(&bytes),
                key: None,
                timestamp_ms: None,
                offset,
            },
            &mut TaskOutput::default(),
        )
        .unwrap();
    };
    for upstream_partition in 0..2 {
        deliver(
            &mut task,
            RepartitionMessage::Watermark {
                upstream_partition,
                stream_time: 60_000,
            },
        );
    }
    task.flush(&mut TaskOutput::default()).unwrap();
    task.apply_committed(Vec::new()).unwrap();
    assert_eq!(task.commit_metadata(), "eddy1;wm=60000,60000;closed=60000");

    // An uncommitted transaction moves both upstreams (one of them idle) and is aborted.
    deliver(
        &mut task,
        RepartitionMessage::Watermark {
            upstream_partition: 0,
            stream_time: 600_000,
        },
    );
    deliver(
        &mut task,
        RepartitionMessage::Idle {
            upstream_partition: 1,
            stream_time: 600_000,
        },
    );
    task.flush(&mut TaskOutput::default()).unwrap();
    assert_eq!(
        task.commit_metadata(),
        "eddy1;wm=600000,600000;closed=600000"
    );
    task.rollback(Some(3)).unwrap();
    assert_eq!(
        task.commit_metadata(),
        "eddy1;wm=60000,60000;closed=60000",
        "the rollback returns to the committed upstream time and closing watermark"
    );
}

/// A commit completes while the task goes on processing (the commit thread): success applies
/// what the flush covered and nothing after it; a later rollback returns to that flush, not to
/// the time the commit happened to end.
#[test]
fn a_commit_applies_what_its_flush_covered_not_what_was_processed_meanwhile() {
    let topology = Topology::builder()
        .source(
            SourceBuilder::new("events", "events", Schema::Json)
                .time_field("ts", TimeFormat::EpochMillis)
                .build(),
        )
        .aggregation(
            AggregationBuilder::new("by_kind", "events", "out")
                .group_by("kind")
                .aggregate("n", AggregateKind::Count)
                .build(),
        )
        .build()
        .unwrap();
    let compiled = CompiledTopology::new("app", topology);
    let partitions = HashMap::from([("events".to_string(), 1)]);
    let merge = TaskId {
        topic: "app-by_kind-repartition".into(),
        partition: 0,
    };
    let (mut task, _) = compiled
        .create_task(&merge, &partitions, &StateLocation::Memory)
        .unwrap();
    let mut offset = 0;
    let mut deliver = |task: &mut eddy::task::StreamTask, message: RepartitionMessage| {
        let bytes = message.encode();
        offset += 1;
        task.process(
            InputRecord {
                payload: Some(&bytes),
                key: None,
                timestamp_ms: None,
                offset,
            },
            &mut TaskOutput::default(),
        )
        .unwrap();
    };
    let watermark = |stream_time| RepartitionMessage::Watermark {
        upstream_partition: 0,
        stream_time,
    };
    deliver(&mut task, watermark(60_000));
    task.flush(&mut TaskOutput::default()).unwrap();
    // Processed while the flushed transaction commits: belongs to the next one.
    deliver(&mut task, watermark(120_000));
    task.apply_committed(Vec::new()).unwrap();
    deliver(&mut task, watermark(180_000));
    task.rollback(Some(1)).unwrap();
    assert_eq!(
        task.commit_metadata(),
        "eddy1;wm=60000;closed=60000",
        "the rollback returns to what the committed flush covered"
    );

    // The same for an input task's stream time.
    let input = TaskId {
        topic: "events".into(),
        partition: 0,
    };
    let (mut task, _) = compiled
        .create_task(&input, &partitions, &StateLocation::Memory)
        .unwrap();
    let mut pipe = |task: &mut eddy::task::StreamTask, offset: i64, ts: i64| {
        let payload = format!(r#"{{"ts": {ts}, "kind": "a"}}"#);
        task.process(
            InputRecord {
                payload: Some(payload.as_bytes()),
                key: None,
                timestamp_ms: None,
                offset,
            },
            &mut TaskOutput::default(),
        )
        .unwrap();
    };
    pipe(&mut task, 0, 1_000);
    task.flush(&mut TaskOutput::default()).unwrap();
    pipe(&mut task, 1, 9_000);
    task.apply_committed(Vec::new()).unwrap();
    task.rollback(Some(1)).unwrap();
    assert_eq!(task.stream_time(), 1_000);
    assert_eq!(task.next_offset(), Some(1));
}
