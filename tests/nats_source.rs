//! Seed 001's event bus on NATS JetStream: events published by Go (nats.go, seed 001's `Event`
//! unchanged) are aggregated exactly once into Kafka outputs, checked window by window against an
//! independent reference, through kill -9 of instances, a nats-server restart and a frozen
//! zombie. Each test runs its own nats-server; the Kafka broker is the test broker.

mod common;

use common::nats::{events_topology, produced, publish, NatsServer, Published};
use common::reference::{reference, verify, Produced};
use common::{EddyOptions, EddyProcess};
use eddy::topology::Topology;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SOURCE: &str = "domain_events";

/// The publisher's arguments for part `part` of a run: parts follow each other in event time
/// (part p covers minutes 10p..10p+10 of the run), each with its own seed and ids.
fn part_args(part: usize, count: usize, malformed: usize, closing: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "-count".into(),
        count.to_string(),
        "-malformed".into(),
        malformed.to_string(),
        "-seed".into(),
        part.to_string(),
        "-age".into(),
        format!("{}s", 7_200 - 600 * part),
        "-span".into(),
        "10m".into(),
        "-id-prefix".into(),
        format!("p{part}"),
        "-users".into(),
        "300".into(),
    ]
    .into();
    if closing {
        args.push("-closing".into());
    }
    args
}

/// Publishes part `part` on a thread of its own (so a fault can land while it runs).
fn publish_in_background(
    url: String,
    part: usize,
    closing: bool,
) -> std::thread::JoinHandle<Vec<Published>> {
    std::thread::spawn(move || {
        let args = part_args(part, 10_000, 5, closing);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        publish(&url, &args)
    })
}

struct Scenario {
    suffix: String,
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    app: String,
    topology: Topology,
    nats: NatsServer,
    published: Vec<Published>,
    /// User and password the server requires.
    credentials: Option<(String, String)>,
}

impl Scenario {
    fn new(name: &str) -> Scenario {
        Scenario::with_server(name, NatsServer::start())
    }

    fn with_server(name: &str, nats: NatsServer) -> Scenario {
        let suffix = common::unique(name);
        let dir = tempfile::tempdir().unwrap();
        let files = vec![events_topology(dir.path(), &suffix)];
        let app = common::unique(&format!("{name}app"));
        let topology = Topology::from_files(&files).unwrap().bind(&app);
        Scenario {
            suffix,
            dir,
            files,
            app,
            topology,
            nats,
            published: Vec::new(),
            credentials: None,
        }
    }

    /// Publishes `count` events (seeded), `malformed` of them with a `data` that is no object.
    fn publish(&mut self, part: usize, count: usize, malformed: usize, closing: bool) {
        let args = part_args(part, count, malformed, closing);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.published.extend(publish(&self.publish_url(), &args));
    }

    /// The server's URL, with the user and password the publisher needs when it asks for them.
    fn publish_url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => self
                .nats
                .url()
                .replace("nats://", &format!("nats://{user}:{password}@")),
            None => self.nats.url(),
        }
    }

    fn start(&self, instance: &str, extra: Vec<(String, String)>) -> EddyProcess {
        let mut extra_env = vec![
            ("EDDY__NATS__SERVERS".to_string(), self.nats.url()),
            ("EDDY__IDLE_TIMEOUT_MS".to_string(), "2000".to_string()),
        ];
        extra_env.extend(extra);
        EddyProcess::start(&EddyOptions {
            application_id: &self.app,
            topologies: &self.files,
            state_dir: self.dir.path(),
            guarantee: "exactly_once",
            instance,
            extra_env,
        })
    }

    fn events(&self) -> (Vec<Produced>, Vec<Published>) {
        produced(&self.topology, SOURCE, &self.published)
    }

    fn outputs(&self) -> Vec<String> {
        vec![format!("event-aggregates-{}", self.suffix)]
    }

    /// Waits for every expected window, then checks values, duplicates and the dead letters.
    fn verify(&self, timeout: Duration) -> (usize, usize, usize, usize) {
        let (events, malformed) = self.events();
        let expected = reference(&self.topology, &events);
        let read = || {
            let emitted: Vec<_> = self
                .outputs()
                .iter()
                .flat_map(|t| common::read_aggregates(t))
                .collect();
            verify(&expected, &emitted)
        };
        let deadline = Instant::now() + timeout;
        let mut result = read();
        while result.3 > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            result = read();
        }
        if result.3 == 0 {
            std::thread::sleep(Duration::from_secs(5));
            result = read();
        }
        let dead = common::read_committed(&format!("{}-dlq", self.app));
        let reasons: Vec<String> = dead
            .iter()
            .filter_map(|r| r.headers.iter().find(|(k, _)| k == "eddy.error"))
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .collect();
        println!(
            "{}: {} messages published ({} with malformed data), {} windows checked, mismatches {}, duplicates {}, missing {}; dead letters {}",
            self.suffix,
            self.published.len(),
            malformed.len(),
            result.0,
            result.1,
            result.2,
            result.3,
            dead.len()
        );
        assert_eq!(
            dead.len(),
            malformed.len(),
            "every event with malformed data, and nothing else, is dead-lettered once"
        );
        for reason in &reasons {
            assert!(
                reason.contains("field `data` must hold a JSON object as a string"),
                "{reason}"
            );
        }
        result
    }
}

fn assert_exact(result: (usize, usize, usize, usize), logs: &str) {
    let (checked, mismatches, duplicates, missing) = result;
    if (mismatches, duplicates, missing) != (0, 0, 0) {
        eprintln!("eddy logs:\n{logs}");
    }
    assert!(checked > 100, "enough windows to mean something: {checked}");
    assert_eq!((mismatches, duplicates, missing), (0, 0, 0));
}

/// One instance over a backlog: every version, zone and subject counted once, the malformed
/// events dead-lettered with their reason.
#[test]
fn nats_seed_events_are_aggregated_exactly_and_malformed_ones_dead_lettered() {
    let mut s = Scenario::new("natsone");
    s.publish(0, 20_000, 25, false);
    let eddy = s.start("a", vec![]);
    s.publish(1, 10_000, 5, true);
    let result = s.verify(Duration::from_secs(180));
    assert_exact(result, &eddy.all_logs_text());
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}

/// Three instances share four splits; one is killed (-9) while a publish is under way and it is
/// reading (its consumed-records counter for the splits moved in the last moment), then
/// restarted; the nats-server itself is restarted mid-run. The output stays exact.
#[test]
fn nats_kill9_and_a_server_restart_keep_the_output_exact() {
    let mut s = Scenario::new("natskill");
    s.publish(0, 30_000, 10, false);
    let names = ["a", "b", "c"];
    let addrs: Vec<String> = names
        .iter()
        .map(|_| format!("127.0.0.1:{}", common::free_port()))
        .collect();
    let http = |i: usize| vec![("EDDY__HTTP__LISTEN".to_string(), addrs[i].clone())];
    let mut instances: Vec<Option<EddyProcess>> =
        (0..3).map(|i| Some(s.start(names[i], http(i)))).collect();
    let assignment = format!("topic=\"{}\"", s.topology.source(SOURCE).unwrap().topics[0]);
    let consumed =
        |addr: &str| common::counter_sum(addr, "eddy_records_consumed_total", &assignment);
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut in_flight = 0;
    for part in 1..4 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let before: Vec<f64> = addrs.iter().map(|a| consumed(a)).collect();
        let publisher = publish_in_background(s.nats.url(), part, part == 3);
        // The victim is an instance reading the publish under way (its counter moved), picked
        // by the seeded schedule among those that are.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut readers = Vec::new();
        while readers.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            readers = (0..3)
                .filter(|&k| consumed(&addrs[k]) > before[k])
                .collect();
        }
        let reading = !readers.is_empty();
        let victim = if reading {
            readers[rng as usize % readers.len()]
        } else {
            rng as usize % 3
        };
        std::thread::sleep(Duration::from_millis(rng % 100));
        in_flight += usize::from(reading);
        instances[victim].take().unwrap().kill();
        println!(
            "part {part}: killed {} while it was reading: {reading}",
            names[victim]
        );
        s.published.extend(publisher.join().unwrap());
        if part == 2 {
            let down = s.nats.restart(Duration::from_secs(2));
            println!("nats-server down for {down:?}");
        }
        instances[victim] = Some(s.start(names[victim], http(victim)));
        // Back in the group before the next victim is chosen.
        common::wait_for(
            "the restarted instance to read",
            Duration::from_secs(120),
            || {
                common::http_get_raw(&addrs[victim], "/health/ready")
                    .is_ok_and(|(status, _)| status == 200)
            },
        );
    }
    let result = s.verify(Duration::from_secs(300));
    let logs = instances
        .iter()
        .flatten()
        .next()
        .map(|p| p.all_logs_text())
        .unwrap_or_default();
    for process in instances.into_iter().flatten() {
        process.kill();
    }
    assert_eq!(in_flight, 3, "every kill hit an instance mid-read");
    assert_exact(result, &logs);
}

/// A frozen instance (SIGSTOP while it reads a publish under way, past the session timeout)
/// loses its splits to the other; when it wakes, its transaction is fenced and nothing it wrote
/// becomes visible.
#[test]
fn nats_a_frozen_instance_is_fenced() {
    let mut s = Scenario::new("natszombie");
    let names = ["x", "y"];
    let addrs: Vec<String> = names
        .iter()
        .map(|_| format!("127.0.0.1:{}", common::free_port()))
        .collect();
    let mut instances: Vec<Option<EddyProcess>> = (0..2)
        .map(|i| {
            Some(s.start(
                names[i],
                vec![("EDDY__HTTP__LISTEN".to_string(), addrs[i].clone())],
            ))
        })
        .collect();
    s.publish(0, 20_000, 5, false);
    let assignment = format!("topic=\"{}\"", s.topology.source(SOURCE).unwrap().topics[0]);
    let consumed =
        |addr: &str| common::counter_sum(addr, "eddy_records_consumed_total", &assignment);
    let takeovers = |p: &EddyProcess| {
        p.log_text()
            .matches("partitions assigned partitions=[(")
            .count()
    };
    // The backlog read (by whichever instances own the splits) before the freeze.
    let backlog = s.published.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while addrs.iter().map(|a| consumed(a)).sum::<f64>() < backlog {
        if Instant::now() > deadline {
            let logs: Vec<String> = instances.iter().flatten().map(|p| p.log_text()).collect();
            panic!(
                "the backlog was not read within 120 s ({} of {backlog}); logs:\n{}",
                addrs.iter().map(|a| consumed(a)).sum::<f64>(),
                logs.join("\n=====\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let url = s.nats.url();
    let before: Vec<f64> = addrs.iter().map(|a| consumed(a)).collect();
    let publisher = publish_in_background(url, 1, false);
    // The zombie is an instance reading the publish under way.
    let mut reader = None;
    common::wait_for(
        "an instance to read the publish under way",
        Duration::from_secs(30),
        || {
            reader = (0..2).find(|&k| consumed(&addrs[k]) > before[k]);
            reader.is_some()
        },
    );
    let zombie_at = reader.unwrap();
    let zombie = instances[zombie_at].take().unwrap();
    let healthy = instances[1 - zombie_at].take().unwrap();
    let before = takeovers(&healthy);
    zombie.signal(libc::SIGSTOP);
    s.published.extend(publisher.join().unwrap());
    common::wait_for(
        "the healthy instance to take over the frozen one's splits",
        Duration::from_secs(90),
        || takeovers(&healthy) > before,
    );
    // Past the transaction timeout too, so the zombie's open transaction was aborted.
    std::thread::sleep(Duration::from_secs(12));
    let zombie_log_before = zombie.log_text().len();
    zombie.signal(libc::SIGCONT);
    s.publish(2, 10_000, 5, true);
    let result = s.verify(Duration::from_secs(300));
    let zombie_log = zombie.log_text()[zombie_log_before..].to_string();
    let fenced = zombie_log.contains("lost=true")
        || zombie_log.contains("session timed out")
        || zombie_log.contains("rolling back")
        || zombie_log.contains("fenced");
    let logs = healthy.all_logs_text();
    zombie.kill();
    healthy.kill();
    assert!(
        fenced,
        "the zombie must notice it was fenced; its log after SIGCONT:\n{zombie_log}"
    );
    assert_exact(result, &logs);
}

/// Waits for the process to exit by itself; its exit code.
fn exit_code(process: &mut EddyProcess, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The stream loses messages eddy had not read (purged while eddy was down): by default eddy
/// stops and says so; with `on_missing = "skip"` it goes on from the stream's first message,
/// counts what it skipped, and everything it did read is exact.
#[test]
fn nats_a_purged_position_stops_eddy_or_is_skipped_and_counted() {
    let mut s = Scenario::new("natspurge");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let http = vec![("EDDY__HTTP__LISTEN".to_string(), addr.clone())];
    s.publish(0, 5_000, 5, false);
    let eddy = s.start("a", http.clone());
    let assignment = format!("topic=\"{}\"", s.topology.source(SOURCE).unwrap().topics[0]);
    let read = s.published.len() as f64;
    common::wait_for("the first part read", Duration::from_secs(60), || {
        common::counter_sum(&addr, "eddy_records_consumed_total", &assignment) >= read
    });
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);

    // While eddy is down: more events, then the stream loses them all.
    s.publish(1, 5_000, 5, false);
    publish(&s.nats.url(), &["-purge"]);
    s.published.retain(|m| !m.payload.contains("\"id\":\"p1-"));

    let mut stopped = s.start("a", http.clone());
    let code = exit_code(&mut stopped, Duration::from_secs(60));
    let log = stopped.log_text();
    assert_eq!(code, Some(1), "eddy stops on a lost position; log:\n{log}");
    assert!(
        log.contains("were removed") && log.contains("on_missing = \"skip\""),
        "the error says what happened and what to do:\n{log}"
    );

    let text = std::fs::read_to_string(&s.files[0])
        .unwrap()
        .replace("on_missing = \"fail\"", "on_missing = \"skip\"");
    std::fs::write(&s.files[0], text).unwrap();
    let eddy = s.start("a", http);
    s.publish(2, 5_000, 5, true);
    let result = s.verify(Duration::from_secs(180));
    let skipped = common::counter_sum(&addr, "eddy_nats_skipped_messages_total", "");
    println!("skipped (counted): {skipped}");
    assert!(skipped > 0.0, "the skipped sequences are counted");
    let logs = eddy.all_logs_text();
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
    assert_exact(result, &logs);
}

/// A server that requires a user and password: eddy reads the password from a file (as a
/// mounted secret) and aggregates exactly; with a wrong password it stops with an error that
/// says what to check.
#[test]
fn nats_credentials_come_from_files_and_a_refused_login_stops_eddy() {
    let mut s = Scenario::with_server(
        "natsauth",
        NatsServer::start_with(&["--user", "eddy", "--pass", "s3cret-nats"]),
    );
    s.credentials = Some(("eddy".into(), "s3cret-nats".into()));
    let secret = s.dir.path().join("nats-password");
    std::fs::write(&secret, "not-the-password-42\n").unwrap();
    let login = vec![
        ("EDDY__NATS__USER".to_string(), "eddy".to_string()),
        (
            "EDDY__NATS__PASSWORD_FILE".to_string(),
            secret.display().to_string(),
        ),
        (
            "EDDY__NATS__CONNECT_TIMEOUT_MS".to_string(),
            "3000".to_string(),
        ),
    ];
    s.publish(0, 3_000, 3, true);
    let mut refused = s.start("a", login.clone());
    let code = exit_code(&mut refused, Duration::from_secs(60));
    let log = refused.log_text();
    assert_eq!(code, Some(1), "a refused login stops eddy; log:\n{log}");
    assert!(
        log.contains("could not connect to NATS") && log.contains("credentials"),
        "the error says where to look:\n{log}"
    );
    assert!(
        !log.contains("not-the-password-42"),
        "no password in the log"
    );

    std::fs::write(&secret, "s3cret-nats\n").unwrap();
    let eddy = s.start("a", login);
    let result = s.verify(Duration::from_secs(180));
    let logs = eddy.all_logs_text();
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
    assert_exact(result, &logs);
}
