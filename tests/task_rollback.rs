//! Rollbacks and commits of a task: a rolled-back merge task returns to its committed upstream
//! watermarks (so replayed partials are not mistaken for late ones), a commit applies what its
//! flush covered, not what was processed while it committed, and closing spread over commits
//! goes on where the last commit left it, after a rollback or a restart.

use eddy::task::{
    CompiledTopology, InputRecord, OutgoingKind, RepartitionMessage, StateLocation, StreamTask,
    TaskId, TaskOutput,
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

/// Sessions per user, grouped by the source key (so closed by the input task itself), with at
/// most `close_limit` windows closed per commit.
fn sessions_by_user(close_limit: usize) -> CompiledTopology {
    let topology = Topology::builder()
        .source(
            SourceBuilder::new("events", "events", Schema::Json)
                .time_field("ts", TimeFormat::EpochMillis)
                .key_field("user")
                .build(),
        )
        .aggregation(
            AggregationBuilder::new("sessions", "events", "out")
                .session(1_000)
                .group_by("user")
                .aggregate("n", AggregateKind::Count)
                .build(),
        )
        .build()
        .unwrap();
    CompiledTopology::new("app", topology).with_close_limit(close_limit)
}

/// The users whose sessions a flush closed, in order.
fn closed_sessions(out: &TaskOutput) -> Vec<String> {
    out.records
        .iter()
        .filter(|r| r.kind == OutgoingKind::Aggregate { is_final: true })
        .map(|r| {
            let value: serde_json::Value =
                serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            value["group"]["user"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Flushes and applies the flush as a committed transaction would; returns what it closed.
fn commit(task: &mut StreamTask) -> Vec<String> {
    let mut out = TaskOutput::default();
    task.flush(&mut out).unwrap();
    task.apply_committed(
        std::mem::take(&mut out.state),
        &eddy::state::ChangelogEnds::new(),
    )
    .unwrap();
    closed_sessions(&out)
}

#[test]
fn a_jump_of_stream_time_closes_windows_over_several_commits_and_a_restarted_task_closes_the_rest()
{
    let compiled = sessions_by_user(10);
    let partitions = HashMap::from([("events".to_string(), 1)]);
    let id = TaskId {
        topic: "events".into(),
        partition: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let state = StateLocation::Disk(dir.path().to_path_buf());
    let (mut task, db) = compiled.create_task(&id, &partitions, &state).unwrap();
    let mut offset = 0;
    let mut pipe = |task: &mut StreamTask, ts: i64, user: &str| {
        let payload = format!(r#"{{"ts": {ts}, "user": "{user}"}}"#);
        task.process(
            InputRecord {
                payload: Some(payload.as_bytes()),
                key: Some(user.as_bytes()),
                timestamp_ms: None,
                offset,
                subject: None,
            },
            &mut TaskOutput::default(),
        )
        .unwrap();
        offset += 1;
        offset
    };
    // 45 sessions, each closing at its own time, none due yet.
    let users: Vec<String> = (0..45).map(|i| format!("u{i:02}")).collect();
    for (i, user) in users.iter().enumerate() {
        pipe(&mut task, i as i64, user);
    }
    assert!(commit(&mut task).is_empty());
    // Stream time jumps past all of them: each commit closes 10.
    let committed = pipe(&mut task, 1_000_000, "zz");
    let first = commit(&mut task);
    assert_eq!(first, users[..10], "the first 10 in close order");
    let metadata = task.commit_metadata();
    assert_eq!(
        metadata, "eddy1;st=1000000;closed=1010",
        "the commit records where closing stands: u09's session [9, 10) closes at 10 + gap"
    );
    // An aborted transaction that closed the next 10 leaves them to close again.
    let mut aborted = TaskOutput::default();
    task.flush(&mut aborted).unwrap();
    assert_eq!(closed_sessions(&aborted), users[10..20]);
    task.rollback(Some(committed)).unwrap();
    assert_eq!(task.commit_metadata(), metadata);
    let second = commit(&mut task);
    assert_eq!(second, users[10..20]);
    // A restart on the same state goes on from the committed metadata.
    let metadata = task.commit_metadata();
    drop(task);
    db.expect("a task with a store").flush().unwrap();
    let (mut task, _db) = compiled.create_task(&id, &partitions, &state).unwrap();
    task.reload().unwrap();
    task.restore_metadata(&metadata);
    let mut rest = Vec::new();
    for _ in 0..10 {
        let closed = commit(&mut task);
        assert!(closed.len() <= 10);
        rest.extend(closed);
    }
    assert_eq!(
        [first, second, rest].concat(),
        users,
        "every session closed once, in close order"
    );
    assert_eq!(
        task.commit_metadata(),
        "eddy1;st=1000000",
        "closing caught up with stream time"
    );
}
