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
