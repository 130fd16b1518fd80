//! Standby replicas on the real broker (`num_standby_replicas = 1`), each case checked exact
//! against the reference:
//! - an instance killed with kill -9 while processing, never restarted: its partner takes its tasks
//!   over from the warm copies it kept, restoring a small fraction of the changelogs;
//! - a changelog truncated under a standby: the copy is deleted and rebuilt from what the changelog
//!   holds, never served stale;
//! - scaling 1 -> 3 -> 1 with standbys, one of the two leaving by kill -9 mid-work.
//!
//! Every wait is on `/metrics` or `/health`, never on log text.

mod common;

use common::reference::reference;
use common::{counter_sum, EddyProcess, Shipped};
use std::time::{Duration, Instant};

/// One instance of the test's application, with its HTTP address.
struct Member {
    eddy: EddyProcess,
    addr: String,
}

impl Member {
    fn start(run: &Shipped, app: &str, name: &str, extra: &[(&str, &str)]) -> Member {
        let addr = format!("127.0.0.1:{}", common::free_port());
        let mut env = vec![
            ("EDDY__HTTP__LISTEN".to_string(), addr.clone()),
            (
                "EDDY__GROUP_INSTANCE_ID".to_string(),
                format!("{app}-{name}"),
            ),
            ("EDDY__NUM_STANDBY_REPLICAS".to_string(), "1".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Member {
            eddy: run.start(app, name, env),
            addr,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        counter_sum(&self.addr, name, "")
    }
}

fn generated(run: &Shipped, count: usize, seed: u64) -> Vec<common::reference::Produced> {
    let config = eddy::events::GeneratorConfig {
        seed,
        users: 400,
        step_ms: 30.0,
        ..Default::default()
    };
    common::generate(count, 3, &run.orders, &run.analytics, config)
}

fn wait_metric(member: &Member, what: &str, name: &str, at_least: f64) {
    common::wait_for(what, Duration::from_secs(120), || {
        member.metric(name) >= at_least
    });
}

#[test]
fn a_standby_takes_over_a_killed_instance_restoring_only_what_its_copy_lacks() {
    let run = common::shipped("standbykill", 3);
    let events = generated(&run, 36_000, 31);
    let expected = reference(&run.topology, &events);
    let app = common::unique("standbykillapp");
    let quarter = events.len() / 4;
    common::produce_partitioned(&events[..quarter]);
    let first = Member::start(&run, &app, "a", &[]);
    let second = Member::start(&run, &app, "b", &[]);
    // The assignor balances partitions, not stateful tasks, so one instance may run none: the
    // victim is one whose stateful tasks the other keeps warm copies of.
    common::wait_for(
        "a standby copy being read",
        Duration::from_secs(120),
        || {
            first.metric("eddy_standby_records_total") > 0.0
                || second.metric("eddy_standby_records_total") > 0.0
        },
    );
    let (a, b) = if first.metric("eddy_standby_records_total") > 0.0 {
        (first, second)
    } else {
        (second, first)
    };
    wait_metric(&b, "the victim running tasks", "eddy_active_tasks", 1.0);
    common::produce_partitioned(&events[quarter..2 * quarter]);
    wait_metric(
        &b,
        "b consuming",
        "eddy_records_consumed_total",
        quarter as f64 / 4.0,
    );
    // kill -9 b while it processes the next part: input waiting, batches polled, commits open.
    let consumed = b.metric("eddy_records_consumed_total");
    common::produce_partitioned(&events[2 * quarter..3 * quarter]);
    common::wait_for(
        "b consuming the third part",
        Duration::from_secs(60),
        || b.metric("eddy_records_consumed_total") > consumed + 500.0,
    );
    let tasks = a.metric("eddy_active_tasks") + b.metric("eddy_active_tasks");
    let restored_before = a.metric("eddy_restore_records_total");
    let changelogs = common::changelog_records(&app, &run.topology);
    b.eddy.kill();
    let killed = Instant::now();
    common::wait_for("a runs every task", Duration::from_secs(120), || {
        a.metric("eddy_active_tasks") >= tasks
            && matches!(common::http_get(&a.addr, "/health/ready"), Ok((200, _)))
    });
    let took_over = killed.elapsed();
    let restored = a.metric("eddy_restore_records_total") - restored_before;
    let promoted = a.metric("eddy_standby_promoted_total");
    println!(
        "takeover after {took_over:?}: {promoted} standby tasks promoted, {restored} changelog records restored of {changelogs}"
    );
    // a fences b once it sees b gone from the group's description, which it asks for when its
    // assignment changes: that may come a moment after the promoted tasks make it ready.
    common::wait_for(
        "a fencing b's producer once b left the group (its open transaction aborted at once)",
        Duration::from_secs(15),
        || a.metric("eddy_departed_instances_fenced_total") >= 1.0,
    );
    println!("b fenced {:?} after the kill", killed.elapsed());
    common::produce_partitioned(&events[3 * quarter..]);
    common::wait_for_exact(&expected, &run.outputs(), &a.eddy);
    assert!(promoted >= 1.0, "the takeover promoted a standby copy");
    // Without a copy, a restores b's tasks in full: about half of every changelog.
    assert!(
        restored < changelogs as f64 / 8.0,
        "the takeover restored {restored} of {changelogs} changelog records"
    );
    assert_eq!(a.eddy.stop(Duration::from_secs(60)), 0);
}

#[test]
fn a_standby_whose_changelog_was_truncated_is_rebuilt_from_it_not_served_stale() {
    let run = common::shipped("standbytrunc", 3);
    let events = generated(&run, 24_000, 37);
    let expected = reference(&run.topology, &events);
    let app = common::unique("standbytruncapp");
    let quarter = events.len() / 4;
    common::produce_partitioned(&events[..2 * quarter]);
    // b is frozen below while a writes its changelogs on. How long a takes on a loaded machine
    // is not known, so the freeze must not end b's membership or its open transaction: both
    // instances get a session and a transaction timeout longer than the freeze may last.
    let patient = [
        ("EDDY__KAFKA_CONSUMER__SESSION_TIMEOUT_MS", "90000"),
        ("EDDY__KAFKA_PRODUCER__TRANSACTION_TIMEOUT_MS", "90000"),
    ];
    let first = Member::start(&run, &app, "a", &patient);
    let second = Member::start(&run, &app, "b", &patient);
    // Roles. While b is frozen, a must go on writing the changelogs of tasks b keeps copies of.
    // Input reaches an aggregation through a repartition topic, written by whichever instance
    // owns the input partition: a is an instance that owns input partitions (both may), and b,
    // the other, keeps copies of a's stateful tasks (one replica, two members).
    let group = eddy::kafka::CommittedOffsets::new(&common::settings(), &app).unwrap();
    let inputs = [run.orders.as_str(), run.analytics.as_str()];
    let mut a_is_first = None;
    common::wait_for("both members assigned", Duration::from_secs(120), || {
        let Ok(Some(members)) = group.members() else {
            return false;
        };
        let feeds = |name: &str| {
            members.iter().any(|m| {
                m.client_id.ends_with(&format!("-{name}"))
                    && m.partitions
                        .iter()
                        .any(|(t, _)| inputs.contains(&t.as_str()))
            })
        };
        let assigned = members.len() == 2 && members.iter().all(|m| !m.partitions.is_empty());
        a_is_first = Some(feeds("a"));
        assigned && (feeds("a") || feeds("b"))
    });
    let (a, b) = if a_is_first == Some(true) {
        (first, second)
    } else {
        (second, first)
    };
    // b may have run a's tasks before the group settled, so its copies may hold everything the
    // changelogs do and read nothing: the wait is for a round of reading finished.
    common::wait_for("b keeping copies", Duration::from_secs(120), || {
        common::http_get_text(&b.addr, "/metrics")
            .is_ok_and(|text| text.contains("eddy_standby_lag_records{"))
    });
    // Everything produced so far consumed and committed: b holds no open transaction with
    // repartition records, which would hold back a's aggregations (read_committed) while b is
    // frozen.
    let input_partitions: Vec<(String, i32)> = inputs
        .iter()
        .flat_map(|t| (0..3).map(move |p| (t.to_string(), p)))
        .collect();
    common::wait_for("the input committed", Duration::from_secs(120), || {
        let Ok(committed) = group.fetch(&input_partitions) else {
            return false;
        };
        input_partitions
            .iter()
            .zip(committed)
            .all(|((topic, partition), committed)| {
                group
                    .log_end(topic, *partition)
                    .is_ok_and(|end| committed == Some(end))
            })
    });
    // b is frozen (within its session) while a writes its changelogs on, and every changelog is
    // then truncated to its end: b's copies of a's tasks now lie below their changelogs' start,
    // with records they never saw deleted.
    b.eddy.signal(libc::SIGSTOP);
    let changelog_written =
        |m: &Member| counter_sum(&m.addr, "eddy_records_emitted_total", "kind=\"changelog\"");
    let before = changelog_written(&a);
    let consumed = a.metric("eddy_records_consumed_total");
    common::produce_partitioned(&events[2 * quarter..3 * quarter]);
    common::wait_for(
        "a writing its changelogs on",
        Duration::from_secs(45),
        || {
            a.metric("eddy_records_consumed_total") > consumed + 1_000.0
                && changelog_written(&a) > before
        },
    );
    let admin = eddy::kafka::TopicAdmin::new(&common::settings()).unwrap();
    let reader = eddy::kafka::ChangelogReader::new(&common::settings(), false).unwrap();
    let mut truncate = Vec::new();
    for aggregation in &run.topology.aggregations {
        let topic = eddy::topology::changelog_topic(&app, &aggregation.name);
        // The broker deletes records only from topics with a delete policy (as Kafka Streams
        // gives its windowed changelogs).
        admin
            .set_topic_config(&topic, &[("cleanup.policy", "compact,delete")])
            .unwrap();
        let ends = reader
            .read_to_end(&topic, &[0, 1, 2], None, Duration::from_secs(60), |_| {})
            .unwrap();
        truncate.extend(ends.into_iter().map(|(p, end)| (topic.clone(), p, end)));
    }
    let truncated = admin
        .delete_records_before(&truncate, Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        truncated,
        truncate.len(),
        "every changelog partition truncated"
    );
    b.eddy.signal(libc::SIGCONT);
    common::wait_for(
        "b discarded its stale standby copies",
        Duration::from_secs(60),
        || b.metric("eddy_standby_discarded_total") >= 1.0,
    );
    // The copies are rebuilt from what the changelogs hold from now on.
    let read = b.metric("eddy_standby_records_total");
    common::produce_partitioned(&events[3 * quarter..]);
    wait_metric(
        &b,
        "standby records after the rebuild",
        "eddy_standby_records_total",
        read + 1.0,
    );
    println!(
        "b discarded {} stale standby copies",
        b.metric("eddy_standby_discarded_total")
    );
    common::wait_for_exact(&expected, &run.outputs(), &a.eddy);
    assert_eq!(b.eddy.stop(Duration::from_secs(60)), 0);
    assert_eq!(a.eddy.stop(Duration::from_secs(60)), 0);
}

#[test]
fn scaling_one_to_three_to_one_with_standbys_stays_exact() {
    let run = common::shipped("standbyscale", 3);
    let events = generated(&run, 36_000, 41);
    let expected = reference(&run.topology, &events);
    let app = common::unique("standbyscaleapp");
    let quarter = events.len() / 4;
    common::produce_partitioned(&events[..quarter]);
    let a = Member::start(&run, &app, "a", &[]);
    wait_metric(
        &a,
        "a consuming",
        "eddy_records_consumed_total",
        quarter as f64 / 2.0,
    );
    common::produce_partitioned(&events[quarter..2 * quarter]);
    let b = Member::start(&run, &app, "b", &[]);
    let c = Member::start(&run, &app, "c", &[]);
    for member in [&a, &b, &c] {
        wait_metric(member, "tasks running", "eddy_active_tasks", 1.0);
    }
    // Copies are kept of stateful tasks only, which the assignor may leave off some instances.
    common::wait_for("standby copies kept", Duration::from_secs(120), || {
        [&a, &b, &c]
            .iter()
            .map(|m| m.metric("eddy_standby_tasks"))
            .sum::<f64>()
            >= 1.0
    });
    // Back to one: c is killed while it processes the third part (input waiting, batches
    // polled, commits open), then b leaves cleanly.
    let consumed = c.metric("eddy_records_consumed_total");
    common::produce_partitioned(&events[2 * quarter..3 * quarter]);
    wait_metric(
        &c,
        "c consuming the third part",
        "eddy_records_consumed_total",
        consumed + 100.0,
    );
    c.eddy.kill();
    assert_eq!(b.eddy.stop(Duration::from_secs(60)), 0);
    common::produce_partitioned(&events[3 * quarter..]);
    common::wait_for_exact(&expected, &run.outputs(), &a.eddy);
    println!(
        "a promoted {} standby copies",
        a.metric("eddy_standby_promoted_total")
    );
    assert_eq!(a.eddy.stop(Duration::from_secs(60)), 0);
}
