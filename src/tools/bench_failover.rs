//! `eddy bench failover`: how long partitions stand still when an instance dies.
//!
//! Three eddy processes (exactly-once) keep per-user session state of `--keys` users, keyed by
//! user (`key_field`), while events arrive at a steady `--rate`. For each case, one instance is
//! killed with kill -9 and either restarted on its own state directory one second later or never
//! restarted (the survivors take over). A watcher reads the group's committed offsets every
//! 250 ms; a partition's standstill is the longest time its committed offset did not move, from
//! a second before the kill until the group recovered. The benchmark prints the longest standstill
//! of any partition, the changelog records restored, and the standby copies promoted. After the
//! last case the output is checked: the sessions emit updates (`emit = "update"`), and every user's
//! last update must count every event produced for it, no more and no less. (Final emission would
//! close every session at once at the end: one transaction of millions of records, see
//! docs/failover.md.)

use super::bench_e2e::BrokerBench;
use super::bench_process::{EddyProcess, EddyRun};
use crate::events::{go_time_json, AnalyticsEvent};
use crate::kafka::{ChangelogReader, ClientSettings, CommittedOffsets, RecordProducer, TopicAdmin};
use crate::operator::AggregateRecord;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happens to the killed instance, and how the group is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailoverCase {
    /// Restarted 1 s later on its state directory, static membership (`group_instance_id`).
    Restart,
    /// Restarted 1 s later on its state directory, without static membership.
    RestartDynamic,
    /// Never restarted; no standbys: the survivors restore its tasks.
    Takeover,
    /// Never restarted; `num_standby_replicas = 1`.
    TakeoverStandby,
    /// Never restarted; `num_standby_replicas = 2` (every survivor keeps a copy).
    TakeoverStandby2,
}

impl FailoverCase {
    fn restarts(self) -> bool {
        matches!(self, FailoverCase::Restart | FailoverCase::RestartDynamic)
    }

    fn static_membership(self) -> bool {
        self != FailoverCase::RestartDynamic
    }

    fn standbys(self) -> u32 {
        match self {
            FailoverCase::TakeoverStandby => 1,
            FailoverCase::TakeoverStandby2 => 2,
            _ => 0,
        }
    }
}

/// Options of `eddy bench failover`.
pub struct Failover<'a> {
    pub broker: &'a BrokerBench,
    pub keys: &'a [u32],
    pub rate: u64,
    pub cases: &'a [FailoverCase],
    pub runs: usize,
    /// Whether the instances serve the query API (and index every output partition for it).
    pub query_api: bool,
}

const INSTANCES: [&str; 3] = ["a", "b", "c"];
/// Event time of the first event; every event of a run falls within one session gap of it.
const START_MS: i64 = 1_795_340_400_000;

/// The events produced so far, and how many each user got.
struct Produced {
    producer: RecordProducer,
    topic: String,
    per_user: Vec<u32>,
    sent: u64,
}

impl Produced {
    /// One event of `user`. Event times move 1 ms per 1,000 events, so a run spans far less
    /// than the 30-minute session gap: each user has exactly one session.
    fn send(&mut self, user: u32) -> anyhow::Result<()> {
        let at_ms = START_MS + (self.sent / 1_000) as i64;
        let event = AnalyticsEvent {
            id: String::new(),
            timestamp: go_time_json(at_ms as i128 * 1_000_000, 0),
            event_type: "page_view".into(),
            user_id: format!("u{user}"),
            properties: Default::default(),
        };
        let key = event.user_id.clone();
        self.producer
            .send_to(&self.topic, key.as_bytes(), &serde_json::to_vec(&event)?)?;
        if let Some(count) = self.per_user.get_mut(user as usize) {
            *count += 1;
        }
        self.sent += 1;
        Ok(())
    }
}

/// The bench topology: per-user sessions over the input topic, keyed by user.
fn write_topology(dir: &Path, input: &str, output: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("failover.toml");
    std::fs::write(
        &path,
        format!(
            r#"[[source]]
name = "events"
topic = "{input}"
schema = "analytics_event"
time = {{ field = "timestamp", format = "rfc3339" }}
key_field = "userId"
on_decode_error = "dlq"

[[aggregation]]
name = "failover.user_sessions"
source = "events"
group_by = ["userId"]
window = {{ type = "session", gap = "30m" }}
grace = "30s"
emit = "update"
output = "{output}"
[aggregation.aggregates]
events = "count"
"#
        ),
    )?;
    Ok(path)
}

/// One run's processes and what they share.
struct Group<'a> {
    bench: &'a BrokerBench,
    query_api: bool,
    application_id: String,
    topology: Vec<PathBuf>,
    dir: PathBuf,
    processes: Vec<Option<EddyProcess>>,
    starts: usize,
}

impl Group<'_> {
    fn start(&mut self, index: usize, case: FailoverCase) -> anyhow::Result<()> {
        let name = INSTANCES[index];
        let mut env = vec![
            (
                "EDDY__NUM_STANDBY_REPLICAS".to_string(),
                case.standbys().to_string(),
            ),
            (
                "EDDY__HTTP__QUERY_API".to_string(),
                self.query_api.to_string(),
            ),
        ];
        if case.static_membership() {
            env.push((
                "EDDY__GROUP_INSTANCE_ID".to_string(),
                format!("{}-{name}", self.application_id),
            ));
        }
        self.starts += 1;
        let process = EddyProcess::start(EddyRun {
            bootstrap: &self.bench.bootstrap_servers,
            application_id: &self.application_id,
            topology: &self.topology,
            state_dir: &self.dir.join(name),
            threads: self.bench.threads,
            commit_interval_ms: self.bench.commit_interval_ms,
            log: self.dir.join(format!("eddy-{name}-{}.log", self.starts)),
            env,
        })?;
        self.processes[index] = Some(process);
        Ok(())
    }

    fn running(&self) -> impl Iterator<Item = &EddyProcess> {
        self.processes.iter().flatten()
    }

    fn all_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for process in self.processes.iter_mut().flatten() {
            process.wait_ready(timeout)?;
        }
        Ok(())
    }

    fn metric(&self, name: &str) -> f64 {
        self.running().map(|p| p.metric(name)).sum()
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        for process in self.processes.iter_mut() {
            if let Some(process) = process.take() {
                process.stop()?;
            }
        }
        Ok(())
    }
}

/// Committed offsets of every input partition, read every 250 ms by a thread of its own:
/// (when, offsets).
type Samples = Arc<Mutex<Vec<(Instant, Vec<Option<i64>>)>>>;

fn watch_offsets(
    settings: &ClientSettings,
    group: &str,
    partitions: Vec<(String, i32)>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Samples, std::thread::JoinHandle<()>)> {
    let reader = CommittedOffsets::new(settings, group)?;
    let samples: Samples = Arc::default();
    let kept = samples.clone();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let asked = Instant::now();
            if let Ok(offsets) = reader.fetch(&partitions) {
                kept.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((asked, offsets));
            }
            std::thread::sleep(Duration::from_millis(250).saturating_sub(asked.elapsed()));
        }
    });
    Ok((samples, handle))
}

/// The longest time one input partition's committed offset stood still.
#[derive(Clone, Copy, Debug)]
struct Standstill {
    partition: usize,
    /// Its last move before (or `from`, the start of the measurement).
    from: Instant,
    /// The move that ended it.
    until: Instant,
}

impl Standstill {
    fn seconds(&self) -> f64 {
        self.until
            .saturating_duration_since(self.from)
            .as_secs_f64()
    }
}

/// Seconds from `at` to `to`, negative when `to` came first.
fn relative(to: Instant, at: Instant) -> f64 {
    match to.checked_duration_since(at) {
        Some(after) => after.as_secs_f64(),
        None => -at.saturating_duration_since(to).as_secs_f64(),
    }
}

/// The longest standstill of any partition since `from`: the longest time between two
/// consecutive moves of its committed offset (`from` counting as one). A move right after a kill
/// (the victim's last commit completing on the broker) does not end a standstill that follows it.
/// `None` while some partition has not moved since `settled`.
fn longest_standstill(
    samples: &[(Instant, Vec<Option<i64>>)],
    from: Instant,
    settled: Instant,
) -> Option<Standstill> {
    let partitions = samples.first()?.1.len();
    let mut longest = Standstill {
        partition: 0,
        from,
        until: from,
    };
    for p in 0..partitions {
        let mut last_move = from;
        let mut moved_since_settled = false;
        for pair in samples.windows(2) {
            let (_, before) = &pair[0];
            let (at, after) = &pair[1];
            // A move is an offset that grew; a failed read of one partition (no offset) is none.
            let moved = matches!((before[p], after[p]), (Some(b), Some(a)) if a > b);
            if !moved || *at <= from {
                continue;
            }
            let this = Standstill {
                partition: p,
                from: last_move,
                until: *at,
            };
            if this.seconds() > longest.seconds() {
                longest = this;
            }
            last_move = *at;
            moved_since_settled |= *at > settled;
        }
        if !moved_since_settled {
            return None;
        }
    }
    Some(longest)
}

/// When each partition's committed offset first moved after `from`.
fn first_moves(samples: &[(Instant, Vec<Option<i64>>)], from: Instant) -> Vec<Option<Instant>> {
    let partitions = samples.first().map_or(0, |(_, offsets)| offsets.len());
    (0..partitions)
        .map(|p| {
            samples.windows(2).find_map(|pair| {
                let moved = matches!((pair[0].1[p], pair[1].1[p]), (Some(b), Some(a)) if a > b);
                (moved && pair[1].0 > from).then_some(pair[1].0)
            })
        })
        .collect()
}

/// Waits until every partition's committed offset reaches `ends`.
fn wait_caught_up(
    samples: &Samples,
    ends: &[i64],
    group: &mut Group<'_>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for process in group.processes.iter_mut().flatten() {
            process.check_running()?;
        }
        let latest = samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .map(|(_, offsets)| offsets.clone());
        if latest.is_some_and(|offsets| {
            offsets
                .iter()
                .zip(ends)
                .all(|(offset, end)| offset.is_some_and(|o| o >= *end))
        }) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let latest = samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last()
                .cloned();
            anyhow::bail!(
                "the group did not catch up within {timeout:?}: committed {:?}, ends {ends:?}",
                latest.map(|(_, offsets)| offsets)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The input partitions' ends now.
fn input_ends(reader: &ChangelogReader, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let all: Vec<i32> = (0..partitions).collect();
    let mut ends = vec![0; partitions as usize];
    // Reading nothing: `from` is past every end, so only the ends are listed.
    for (partition, end) in
        reader.read_to_end(topic, &all, Some(i64::MAX), Duration::from_secs(30), |_| {})?
    {
        ends[partition as usize] = end;
    }
    Ok(ends)
}

/// What one case measured.
struct Measured {
    case: FailoverCase,
    keys: u32,
    standstill_s: f64,
    restored: f64,
    promoted: f64,
    exact: (usize, usize, usize),
}

pub fn failover(options: Failover<'_>) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &keys in options.keys {
        for run in 0..options.runs {
            println!("-- {keys} keys, run {} of {}", run + 1, options.runs);
            results.extend(one_run(&options, keys)?);
        }
    }
    println!();
    println!("| case | keys | longest standstill | records restored | standbys promoted | users missing / over-counted / under-counted |");
    println!("|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {:?} | {} | {:.2} s | {:.0} | {:.0} | {} / {} / {} |",
            r.case, r.keys, r.standstill_s, r.restored, r.promoted, r.exact.0, r.exact.1, r.exact.2
        );
    }
    let inexact = results.iter().filter(|r| r.exact != (0, 0, 0)).count();
    anyhow::ensure!(
        inexact == 0,
        "{inexact} cases ended with the output not exact"
    );
    Ok(())
}

/// One run: state of `keys` users built once, then every case in turn on the same group.
fn one_run(options: &Failover<'_>, keys: u32) -> anyhow::Result<Vec<Measured>> {
    let bench = options.broker;
    let run = format!("{:x}", crate::runtime::now_ms());
    let dir = std::env::temp_dir().join(format!("eddy-bench-failover-{run}"));
    std::fs::create_dir_all(&dir)?;
    let settings = ClientSettings::plain(&bench.bootstrap_servers);
    let admin = TopicAdmin::new(&settings)?;
    let input = format!("bench-failover-{run}");
    let output = format!("bench-failover-sessions-{run}");
    admin.create_plain_topics(&[(&input, bench.partitions), (&output, bench.partitions)])?;
    let application_id = format!("bench-failover-{run}");
    let mut group = Group {
        bench,
        query_api: options.query_api,
        application_id: application_id.clone(),
        topology: vec![write_topology(&dir, &input, &output)?],
        dir: dir.clone(),
        processes: (0..INSTANCES.len()).map(|_| None).collect(),
        starts: 0,
    };
    let produced = Arc::new(Mutex::new(Produced {
        producer: RecordProducer::new(&settings, None)?,
        topic: input.clone(),
        per_user: vec![0; keys as usize],
        sent: 0,
    }));
    // The state: one event per user.
    let built = Instant::now();
    {
        let mut produced = produced.lock().unwrap_or_else(|p| p.into_inner());
        for user in 0..keys {
            produced.send(user)?;
        }
        produced.producer.flush()?;
    }
    let reader = ChangelogReader::new(&settings, false)?;
    let partitions: Vec<(String, i32)> =
        (0..bench.partitions).map(|p| (input.clone(), p)).collect();
    let stop_watch = Arc::new(AtomicBool::new(false));
    let (samples, watcher) =
        watch_offsets(&settings, &application_id, partitions, stop_watch.clone())?;
    for index in 0..INSTANCES.len() {
        group.start(
            index,
            options
                .cases
                .first()
                .copied()
                .unwrap_or(FailoverCase::Restart),
        )?;
    }
    group.all_ready(Duration::from_secs(600))?;
    let ends = input_ends(&reader, &input, bench.partitions)?;
    wait_caught_up(&samples, &ends, &mut group, Duration::from_secs(60))?;
    println!(
        "state of {keys} keys built in {:.1}s",
        built.elapsed().as_secs_f64()
    );

    // Steady input from here on: random users at `rate` events per second.
    let steady = Arc::new(AtomicBool::new(true));
    let sent_steady = Arc::new(AtomicU64::new(0));
    let producing = {
        let (produced, steady, sent) = (produced.clone(), steady.clone(), sent_steady.clone());
        let rate = options.rate.max(1);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let started = Instant::now();
            let mut next_user: u64 = 0x9e37_79b9;
            while steady.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                let mut produced = produced.lock().unwrap_or_else(|p| p.into_inner());
                while sent.load(Ordering::Relaxed) < due {
                    next_user = next_user
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    produced.send(((next_user >> 33) % u64::from(keys)) as u32)?;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                produced.producer.poll();
                drop(produced);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
    };

    let mut measured = Vec::new();
    let mut current = options
        .cases
        .first()
        .copied()
        .unwrap_or(FailoverCase::Restart);
    for &case in options.cases {
        if case.static_membership() != current.static_membership()
            || case.standbys() != current.standbys()
        {
            group.stop_all()?;
            for index in 0..INSTANCES.len() {
                group.start(index, case)?;
            }
            group.all_ready(Duration::from_secs(600))?;
        }
        current = case;
        // Steady state: caught up, standbys (if any) warm.
        std::thread::sleep(Duration::from_secs(5));
        let ends = input_ends(&reader, &input, bench.partitions)?;
        wait_caught_up(&samples, &ends, &mut group, Duration::from_secs(600))?;
        if case.standbys() > 0 {
            let deadline = Instant::now() + Duration::from_secs(300);
            // Warm: every copy placed, and together no more than two seconds of input behind.
            let copies = f64::from(bench.partitions as u32 * case.standbys());
            let behind = 2.0 * options.rate as f64 * f64::from(case.standbys());
            while group.metric("eddy_standby_tasks") < copies
                || group.metric("eddy_standby_lag_records") > behind
            {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "standbys not warm after 5 minutes"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        // Every instance runs tasks (the assignment has settled), the victim among them.
        let deadline = Instant::now() + Duration::from_secs(120);
        while group.running().any(|p| p.metric("eddy_active_tasks") < 1.0) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{case:?}: an instance runs no task after 2 minutes"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let victim = 1;
        let victim_tasks = group.processes[victim]
            .as_ref()
            .map_or(0.0, |p| p.metric("eddy_active_tasks"));
        // The victim's counters go with it: only the survivors' count before the kill.
        let survivors = |name: &str| -> f64 {
            group
                .processes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .filter_map(|(_, p)| p.as_ref().map(|p| p.metric(name)))
                .sum()
        };
        let restored_before = survivors("eddy_restore_records_total");
        let promoted_before = survivors("eddy_standby_promoted_total");
        let killed = Instant::now();
        let killed_at_ms = crate::runtime::now_ms();
        if let Some(process) = group.processes[victim].take() {
            process.kill();
        }
        if case.restarts() {
            std::thread::sleep(Duration::from_secs(1));
            group.start(victim, case)?;
        }
        // Recovered: every instance ready (its tasks restored), and every partition moved since,
        // and since two seconds after the kill: the victim's last commit, if one was under way,
        // may still complete on the broker just after the kill, which is no sign of recovery.
        group.all_ready(Duration::from_secs(300))?;
        let settled = Instant::now().max(killed + Duration::from_secs(2));
        let deadline = settled + Duration::from_secs(120);
        let standstill = loop {
            let found = longest_standstill(
                &samples.lock().unwrap_or_else(|p| p.into_inner()),
                killed - Duration::from_secs(1),
                settled,
            );
            if let Some(found) = found {
                break found;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{case:?}: a partition did not move within 2 minutes of the group's recovery"
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        let restored = group.metric("eddy_restore_records_total") - restored_before;
        let promoted = group.metric("eddy_standby_promoted_total") - promoted_before;
        println!(
            "{case:?}: the victim ran {victim_tasks} tasks; longest standstill {:.2}s (input partition {}, from {:+.2}s to {:+.2}s of the kill at {} ms since the epoch), {restored:.0} changelog records restored, {promoted:.0} standby tasks promoted",
            standstill.seconds(),
            standstill.partition,
            relative(standstill.from, killed),
            relative(standstill.until, killed),
            killed_at_ms,
        );
        println!(
            "  each input partition's first move from two seconds after the kill: {}",
            first_moves(
                &samples.lock().unwrap_or_else(|p| p.into_inner()),
                killed + Duration::from_secs(2)
            )
            .iter()
            .enumerate()
            .map(|(p, at)| match at {
                Some(at) => format!("p{p} {:+.2}s", relative(*at, killed)),
                None => format!("p{p} -"),
            })
            .collect::<Vec<_>>()
            .join(", ")
        );
        let standstill = standstill.seconds();
        if !case.restarts() {
            // Back to three for the next case.
            group.start(victim, case)?;
            group.all_ready(Duration::from_secs(600))?;
        }
        measured.push(Measured {
            case,
            keys,
            standstill_s: standstill,
            restored,
            promoted,
            exact: (0, 0, 0),
        });
    }

    // Stop the input and let the group process all of it, then check the sessions' last updates.
    steady.store(false, Ordering::Relaxed);
    producing
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    let per_user = {
        let mut produced = produced.lock().unwrap_or_else(|p| p.into_inner());
        produced.producer.flush()?;
        std::mem::take(&mut produced.per_user)
    };
    let ends = input_ends(&reader, &input, bench.partitions)?;
    wait_caught_up(&samples, &ends, &mut group, Duration::from_secs(600))?;
    let exact = check_sessions(
        &settings,
        &output,
        bench.partitions,
        &per_user,
        Duration::from_secs(600),
    )?;
    println!(
        "output: {} users missing, {} counted too many events, {} too few",
        exact.0, exact.1, exact.2
    );
    for m in &mut measured {
        m.exact = exact;
    }
    stop_watch.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    group.stop_all()?;
    if std::env::var_os("EDDY_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(measured)
}

/// Reads the sessions' updates until every user's count is there (or `timeout`), and compares each
/// user's highest count (its last update) with what was produced: (missing, counted too many times,
/// counted too few).
fn check_sessions(
    settings: &ClientSettings,
    output: &str,
    partitions: i32,
    per_user: &[u32],
    timeout: Duration,
) -> anyhow::Result<(usize, usize, usize)> {
    let deadline = Instant::now() + timeout;
    let reader = ChangelogReader::new(settings, true)?;
    let all: Vec<i32> = (0..partitions).collect();
    loop {
        let mut seen: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut undecodable = 0;
        reader.read_to_end(output, &all, None, Duration::from_secs(600), |record| {
            let Some(aggregate) = record
                .value
                .and_then(|v| serde_json::from_slice::<AggregateRecord>(&v).ok())
            else {
                undecodable += 1;
                return;
            };
            let Some(user) = aggregate
                .group
                .get("userId")
                .and_then(|u| u.as_str())
                .and_then(|u| u.strip_prefix('u'))
                .and_then(|u| u.parse::<u32>().ok())
            else {
                return;
            };
            let events = aggregate
                .values
                .get("events")
                .and_then(|e| e.as_u64())
                .unwrap_or(0);
            seen.entry(user).or_default().push(events);
        })?;
        anyhow::ensure!(
            undecodable == 0,
            "{undecodable} output records could not be read"
        );
        let mut missing = 0;
        let mut over = 0;
        let mut under = 0;
        for (user, &expected) in per_user.iter().enumerate() {
            let expected = u64::from(expected);
            match seen
                .get(&(user as u32))
                .and_then(|counts| counts.iter().max())
            {
                None => missing += 1,
                Some(last) if *last > expected => over += 1,
                Some(last) if *last < expected => under += 1,
                Some(_) => {}
            }
        }
        if missing + under == 0 || Instant::now() > deadline {
            return Ok((missing, over, under));
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_standstill_is_the_longest_gap_between_moves_of_any_partition() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let samples = vec![
            (at(0), vec![Some(1), Some(1)]),
            (at(250), vec![Some(2), Some(1)]),
            (at(500), vec![Some(3), None]),
            (at(750), vec![Some(4), Some(1)]),
            (at(3000), vec![Some(5), Some(7)]),
            (at(3250), vec![Some(6), Some(8)]),
        ];
        // Partition 1 stood still from the start of the measurement to 3 s (a failed read is no
        // move); partition 0 moved every 250 ms but once.
        let found = longest_standstill(&samples, at(100), at(2000)).expect("both moved");
        assert_eq!(found.partition, 1);
        assert_eq!((found.from, found.until), (at(100), at(3000)));
        assert!((relative(found.from, at(1100)) + 1.0).abs() < 1e-9);
        // Not settled while a partition has not moved since.
        assert!(longest_standstill(&samples, at(100), at(3100)).is_some());
        assert!(longest_standstill(&samples[..5], at(100), at(3000)).is_none());
    }
}
