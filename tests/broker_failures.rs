//! Failure paths on the real broker: a decode failure under `on_decode_error = "fail"` stops the
//! instance without committing past the bad record, and it stops at the same record again after a
//! restart.

mod common;

use common::{EddyOptions, EddyProcess};
use std::time::{Duration, Instant};

fn wait_exit(process: &mut EddyProcess) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "eddy did not stop:\n{}",
            process.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const BASE: i64 = 1_795_000_000_000;

/// A one-source count topology over `input` in `dir`, with `source_extra` lines in its source.
fn clicks_topology(
    dir: &std::path::Path,
    input: &str,
    output: &str,
    source_extra: &str,
) -> std::path::PathBuf {
    clicks_topology_with(dir, input, output, source_extra, "")
}

/// [`clicks_topology`] with `aggregation_extra` lines in its aggregation too.
fn clicks_topology_with(
    dir: &std::path::Path,
    input: &str,
    output: &str,
    source_extra: &str,
    aggregation_extra: &str,
) -> std::path::PathBuf {
    let file = dir.join("clicks.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[source]]
name = "clicks"
topic = "{input}"
time = {{ field = "ts", format = "epoch_ms" }}
{source_extra}

[[aggregation]]
name = "clicks.per_minute"
source = "clicks"
window = {{ type = "tumbling", size = "1m" }}
output = "{output}"
{aggregation_extra}
[aggregation.aggregates]
clicks = "count"
"#
        ),
    )
    .unwrap();
    file
}

/// `n` well-formed click records to `input`, `offset_ms` after the base time, a second apart.
fn clicks(input: &str, n: i64, offset_ms: i64) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                input.to_string(),
                b"k".to_vec(),
                format!(r#"{{"ts":{}}}"#, BASE + offset_ms + i * 1000).into_bytes(),
            )
        })
        .collect()
}

#[test]
fn a_fail_policy_decode_error_commits_nothing_past_the_bad_record_and_stops_there_again() {
    let suffix = common::unique("fail");
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (format!("clicks-{suffix}"), format!("clicks-out-{suffix}"));
    common::create_topics(&[(&input, 1)]);
    let file = clicks_topology(dir.path(), &input, &output, r#"on_decode_error = "fail""#);
    // Offsets 0..10 good, 10 bad, 11..21 good (the last ones far enough ahead to close windows).
    let mut records = clicks(&input, 10, 0);
    records.push((input.clone(), b"k".to_vec(), b"not json".to_vec()));
    records.extend(clicks(&input, 10, 600_000));
    common::produce(records);

    let app = common::unique("failapp");
    for attempt in ["first", "after a restart"] {
        let mut eddy = EddyProcess::start(&EddyOptions {
            application_id: &app,
            topologies: std::slice::from_ref(&file),
            state_dir: dir.path(),
            guarantee: "exactly_once",
            instance: "a",
            extra_env: vec![],
        });
        let code = wait_exit(&mut eddy);
        let log = eddy.log_text();
        assert_ne!(code, 0, "{attempt}: the fail policy stops the instance");
        assert!(
            log.contains(&format!("{input}[0]@10")),
            "{attempt}: the error names the bad record's offset:\n{log}"
        );
        let committed = eddy::kafka::TopicAdmin::new(&common::settings())
            .unwrap()
            .group_offsets(&app, &input, 1)
            .unwrap();
        assert!(
            committed[0].is_none_or(|offset| offset <= 10),
            "{attempt}: nothing past the bad record is committed: {committed:?}"
        );
        let emitted = common::read_aggregates(&output);
        assert!(
            emitted.iter().all(|r| r.window.start < BASE + 600_000),
            "{attempt}: no output from records after the bad one: {emitted:?}"
        );
    }
}

/// Two instances with one `group_instance_id`: the broker fences the first (a fatal client error).
/// It stops with an error that says what to fix instead of logging and staying "ready".
#[test]
fn a_fenced_static_member_stops_with_a_clear_error() {
    let run = common::shipped("fence", 2);
    let config = eddy::events::GeneratorConfig {
        seed: 3,
        ..Default::default()
    };
    common::produce_partitioned(&common::generate(
        2_000,
        2,
        &run.orders,
        &run.analytics,
        config,
    ));
    let app = common::unique("fenceapp");
    let start = |instance: &str| {
        EddyProcess::start(&EddyOptions {
            application_id: &app,
            topologies: &run.files,
            state_dir: run.dir.path(),
            guarantee: "exactly_once",
            instance,
            extra_env: vec![("EDDY__GROUP_INSTANCE_ID".into(), "same-id".into())],
        })
    };
    let mut first = start("first");
    common::wait_for(
        "the first instance to get partitions",
        Duration::from_secs(60),
        || first.log_text().contains("partitions assigned"),
    );
    let second = start("second");
    let code = wait_exit(&mut first);
    let log = first.log_text();
    assert_eq!(code, 1, "the fenced instance stops with an error:\n{log}");
    assert!(
        log.contains("give each instance its own"),
        "the error says what to fix:\n{log}"
    );
    second.kill();
}

/// A dead letter larger than its topic accepts: the instance stops with an error naming the topic
/// and the fix, commits nothing, and does not loop replaying the same record.
#[test]
fn a_record_the_broker_never_accepts_stops_the_instance_with_the_fix() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let suffix = common::unique("toolarge");
    let dir = tempfile::tempdir().unwrap();
    let (input, output, dlq) = (
        format!("clicks-{suffix}"),
        format!("clicks-out-{suffix}"),
        format!("clicks-dlq-{suffix}"),
    );
    common::create_topics(&[(&input, 1)]);
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .create()
        .unwrap();
    let small = NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "2000");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let created = runtime
        .block_on(admin.create_topics([&small], &AdminOptions::new()))
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let file = clicks_topology(
        dir.path(),
        &input,
        &output,
        &format!(r#"dead_letter_topic = "{dlq}""#),
    );
    let mut records = clicks(&input, 5, 0);
    // Incompressible bytes (the producer compresses with LZ4): 10 kB on the wire, over the limit.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..10_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    records.push((input.clone(), b"k".to_vec(), noise));
    common::produce(records);

    let app = common::unique("toolargeapp");
    let mut eddy = EddyProcess::start(&EddyOptions {
        application_id: &app,
        topologies: std::slice::from_ref(&file),
        state_dir: dir.path(),
        guarantee: "exactly_once",
        instance: "a",
        extra_env: vec![],
    });
    let code = wait_exit(&mut eddy);
    let log = eddy.log_text();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!("topic `{dlq}`")) && log.contains("max.message.bytes"),
        "the error names the topic and the fix:\n{log}"
    );
    assert!(common::read_committed(&dlq).is_empty());
    let committed = eddy::kafka::TopicAdmin::new(&common::settings())
        .unwrap()
        .group_offsets(&app, &input, 1)
        .unwrap();
    assert!(
        committed[0].is_none_or(|offset| offset <= 5),
        "nothing past the refused record is committed: {committed:?}"
    );
}

/// Windows kept for `retention` after they closed are reloaded by every restart (clean, with the
/// local files and their checkpoint; and after kill -9, from the changelog). They are scheduled
/// for deletion, never emitted again: each window has exactly one final.
#[test]
fn retained_windows_are_emitted_once_across_restarts() {
    let suffix = common::unique("retain");
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (format!("clicks-{suffix}"), format!("clicks-out-{suffix}"));
    common::create_topics(&[(&input, 1)]);
    let file = clicks_topology_with(dir.path(), &input, &output, "", r#"retention = "1h""#);
    let app = common::unique("retainapp");
    let start = || {
        EddyProcess::start(&EddyOptions {
            application_id: &app,
            topologies: std::slice::from_ref(&file),
            state_dir: dir.path(),
            guarantee: "exactly_once",
            instance: "a",
            extra_env: vec![],
        })
    };
    let finals = || -> Vec<(i64, u64)> {
        let mut finals: Vec<(i64, u64)> = common::read_aggregates(&output)
            .into_iter()
            .filter(|r| r.is_final)
            .map(|r| (r.window.start - BASE, r.values["clicks"].as_u64().unwrap()))
            .collect();
        finals.sort();
        finals
    };
    // Minute m gets 10 clicks; each minute's records close the one before. (BASE is 40 s past
    // a minute boundary: minute m's window starts 20 s after BASE + m minutes.)
    let minute = |m: i64| clicks(&input, 10, m * 60_000 + 20_000);
    let closed = |through: i64| -> Vec<(i64, u64)> {
        (0..through).map(|w| (w * 60_000 + 20_000, 10)).collect()
    };
    let wait_finals = |expected: Vec<(i64, u64)>, eddy: &EddyProcess| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while finals() != expected {
            assert!(
                Instant::now() < deadline,
                "finals {:?}, expected {expected:?}; log:\n{}",
                finals(),
                eddy.log_text()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let mut eddy = start();
    common::produce(minute(0));
    common::produce(minute(1));
    wait_finals(closed(1), &eddy);
    // A clean restart: the store (minute 0 retained) reopens from its files and checkpoint.
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
    eddy = start();
    common::produce(minute(2));
    wait_finals(closed(2), &eddy);
    // kill -9: the store (minutes 0 and 1 retained) is restored from the changelog.
    eddy.kill();
    eddy = start();
    common::produce(minute(3));
    wait_finals(closed(3), &eddy);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(finals(), closed(3), "every window emitted once");
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}
