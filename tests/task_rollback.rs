//! Rollbacks and commits of a task: a rolled-back merge task returns to its committed upstream
//! watermarks (so replayed partials are not mistaken for late ones), and a commit applies what its
//! flush covered, not what was processed while it committed.

use eddy::task::{
    CompiledTopology, InputRecord, RepartitionMessage, StateLocation, StreamTask, TaskId,
    TaskOutput,
};
use eddy::topology::*;
use std::collections::HashMap;

/// Events counted by `kind`: grouped off the key, so through a repartition topic.
fn by_kind() -> CompiledTopology {
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
    CompiledTopology::new("app", topology)
}

/// Hands repartition messages to a merge task, at increasing offsets.
fn delivery() -> impl FnMut(&mut StreamTask, RepartitionMessage) {
    let mut offset = 0;
    move |task, message| {
        let bytes = message.encode();
        offset += 1;
        task.process(
            InputRecord {
                payload: Some(&bytes),
                key: None,
                timestamp_ms: None,
                offset,
                subject: None,
            },
            &mut TaskOutput::default(),
        )
        .unwrap();
    }
}

#[test]
fn rollback_restores_the_merge_sides_upstream_watermarks() {
    let compiled = by_kind();
    let partitions = HashMap::from([("events".to_string(), 2)]);
    let id = TaskId {
        topic: "app-by_kind-repartition".into(),
        partition: 0,
    };
    let (mut task, _) = compiled
        .create_task(&id, &partitions, &StateLocation::Memory)
        .unwrap();
    let mut deliver = delivery();
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
    task.apply_committed(Vec::new(), &eddy::state::ChangelogEnds::new())
        .unwrap();
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
    let compiled = by_kind();
    let partitions = HashMap::from([("events".to_string(), 1)]);
    let merge = TaskId {
        topic: "app-by_kind-repartition".into(),
        partition: 0,
    };
    let (mut task, _) = compiled
        .create_task(&merge, &partitions, &StateLocation::Memory)
        .unwrap();
    let mut deliver = delivery();
    let watermark = |stream_time| RepartitionMessage::Watermark {
        upstream_partition: 0,
        stream_time,
    };
    deliver(&mut task, watermark(60_000));
    task.flush(&mut TaskOutput::default()).unwrap();
    // Processed while the flushed transaction commits: belongs to the next one.
    deliver(&mut task, watermark(120_000));
    task.apply_committed(Vec::new(), &eddy::state::ChangelogEnds::new())
        .unwrap();
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
    let pipe = |task: &mut StreamTask, offset: i64, ts: i64| {
        let payload = format!(r#"{{"ts": {ts}, "kind": "a"}}"#);
        task.process(
            InputRecord {
                payload: Some(payload.as_bytes()),
                key: None,
                timestamp_ms: None,
                offset,
                subject: None,
            },
            &mut TaskOutput::default(),
        )
        .unwrap();
    };
    pipe(&mut task, 0, 1_000);
    task.flush(&mut TaskOutput::default()).unwrap();
    pipe(&mut task, 1, 9_000);
    task.apply_committed(Vec::new(), &eddy::state::ChangelogEnds::new())
        .unwrap();
    task.rollback(Some(1)).unwrap();
    assert_eq!(task.stream_time(), 1_000);
    assert_eq!(task.next_offset(), Some(1));
}
