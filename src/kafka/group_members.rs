//! The group's members and what each is assigned, as the group coordinator sees them
//! (DescribeGroups): standby placement reads them, since librdkafka has no pluggable assignor
//! (confluentinc/librdkafka#2284) through which eddy could place standbys itself.

use super::{operation_error, ClientSettings, KafkaClientError};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One member of the group: its `client.id`, its member id (which the assignor orders members
/// by) and the partitions assigned to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub client_id: String,
    pub member_id: String,
    pub partitions: Vec<(String, i32)>,
}

/// The group as its coordinator describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedGroup {
    /// No rebalance under way: the assignments are final. While the group rebalances its
    /// members are still listed (one whose session expired, or that left, is already gone), but
    /// not what each will be assigned.
    pub stable: bool,
    pub members: Vec<DescribedMember>,
}

/// Describes `group`: its members and, while it is stable, what each is assigned.
pub(crate) fn describe_group<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    group: &str,
    timeout: Duration,
) -> Result<DescribedGroup, KafkaClientError> {
    let list = consumer
        .fetch_group_list(Some(group), timeout)
        .map_err(|e| operation_error(format!("describe the group {group}"), e))?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(DescribedGroup {
            stable: true,
            members: Vec::new(),
        });
    };
    let stable = info.state() == "Stable";
    let members = info
        .members()
        .iter()
        .map(|member| DescribedMember {
            client_id: member.client_id().to_string(),
            member_id: member.id().to_string(),
            partitions: if stable {
                member
                    .assignment()
                    .and_then(parse_assignment)
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(DescribedGroup { stable, members })
}

/// The partitions in a consumer protocol assignment (every version starts the same way: version
/// int16, then topics as [name string, partitions [int32]]; user data follows). `None` when the
/// bytes are cut short.
pub(crate) fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    let mut reader = Reader(bytes);
    let _version = reader.i16()?;
    let topics = reader.i32()?;
    let mut partitions = Vec::new();
    for _ in 0..topics.max(0) {
        let length = usize::try_from(reader.i16()?).ok()?;
        let topic = String::from_utf8(reader.take(length)?.to_vec()).ok()?;
        let count = reader.i32()?;
        for _ in 0..count.max(0) {
            partitions.push((topic.clone(), reader.i32()?));
        }
    }
    Some(partitions)
}

/// How old a description may be and still be handed out.
const FRESH: Duration = Duration::from_millis(600);
/// How often the watcher describes the group unasked: a member the coordinator removed (its
/// session expired) is seen gone within this, usually before the rebalance that follows ends.
const DESCRIBE_EVERY: Duration = Duration::from_millis(500);
/// How long after the last question the watcher goes on describing unasked (a description lists
/// the groups of every broker; an instance whose loop asks nothing, at least once without
/// standbys, sends none).
const KEEP_DESCRIBING: Duration = Duration::from_secs(5);
/// How long one description may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Describes the group on a thread of its own, every [`DESCRIBE_EVERY`] and whenever asked, so
/// that the loop never waits on the coordinator (it did, up to a second per description, right
/// when a takeover needed it most).
/// [`GroupWatcher::describe`] hands out the latest description while it is recent; otherwise it
/// asks for a new one and answers "not yet" (`Ok(None)`), and the caller asks again shortly.
pub(crate) struct GroupWatcher {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<WatchState>,
    wake: Condvar,
}

/// A description, or why it failed.
type Described = Result<DescribedGroup, String>;

#[derive(Default)]
struct WatchState {
    requested: bool,
    /// When a description was last asked for.
    asked: Option<Instant>,
    stop: bool,
    latest: Option<(Instant, Described)>,
}

impl GroupWatcher {
    /// Starts the watcher of `group` with a client of its own.
    pub fn start(settings: &ClientSettings, group: &str) -> Result<GroupWatcher, KafkaClientError> {
        let consumer: BaseConsumer =
            settings
                .base()
                .create()
                .map_err(|e| KafkaClientError::Create {
                    client: "group watcher",
                    reason: e.to_string(),
                })?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let (shared, group) = (shared.clone(), group.to_string());
            std::thread::Builder::new()
                .name("eddy-group-watch".into())
                .spawn(move || watch(&consumer, &group, &shared))
                .map_err(|e| KafkaClientError::Create {
                    client: "group watcher thread",
                    reason: e.to_string(),
                })?
        };
        Ok(GroupWatcher {
            shared,
            thread: Some(thread),
        })
    }

    /// The latest description when it is recent; otherwise a new one is asked for and this
    /// answers `Ok(None)`.
    pub fn describe(&self) -> Result<Option<DescribedGroup>, KafkaClientError> {
        let mut state = lock(&self.shared);
        state.asked = Some(Instant::now());
        if let Some((at, described)) = &state.latest {
            if at.elapsed() <= FRESH {
                return described
                    .clone()
                    .map(Some)
                    .map_err(|reason| KafkaClientError::Operation {
                        operation: "describe the group".into(),
                        reason,
                        code: None,
                    });
            }
        }
        if !state.requested {
            state.requested = true;
            self.shared.wake.notify_one();
        }
        Ok(None)
    }
}

impl Drop for GroupWatcher {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, WatchState> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The watcher's thread: a description every [`DESCRIBE_EVERY`] and each time one is asked for,
/// until stopped.
fn watch(consumer: &BaseConsumer, group: &str, shared: &Shared) {
    loop {
        {
            let mut state = lock(shared);
            loop {
                if state.requested || state.stop {
                    break;
                }
                let watched = state.asked.is_some_and(|at| at.elapsed() < KEEP_DESCRIBING);
                let due = state
                    .latest
                    .as_ref()
                    .map_or(Instant::now(), |(at, _)| *at + DESCRIBE_EVERY);
                if watched && Instant::now() >= due {
                    break;
                }
                // Unwatched, it sleeps until asked (or stopped); watched, until the next is due.
                let wait = if watched {
                    due.saturating_duration_since(Instant::now())
                } else {
                    KEEP_DESCRIBING
                };
                state = shared
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if state.stop {
                return;
            }
        }
        let described =
            describe_group(consumer, group, DESCRIBE_TIMEOUT).map_err(|e| e.to_string());
        let mut state = lock(shared);
        state.latest = Some((Instant::now(), described));
        state.requested = false;
    }
}

/// Big-endian reads off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(version: i16, topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend((user_data.len() as i32).to_be_bytes());
        bytes.extend(user_data);
        bytes
    }

    #[test]
    fn an_assignment_lists_its_partitions_whatever_its_version_and_user_data() {
        for version in [0, 1, 3] {
            let bytes = assignment(
                version,
                &[("orders", &[0, 2]), ("b-repartition", &[1])],
                b"xy",
            );
            assert_eq!(
                parse_assignment(&bytes),
                Some(vec![
                    ("orders".to_string(), 0),
                    ("orders".to_string(), 2),
                    ("b-repartition".to_string(), 1)
                ])
            );
        }
        assert_eq!(parse_assignment(&assignment(0, &[], b"")), Some(vec![]));
    }

    #[test]
    fn a_cut_assignment_is_none() {
        let bytes = assignment(0, &[("orders", &[0, 2])], b"");
        assert_eq!(parse_assignment(&bytes[..bytes.len() - 8]), None);
        assert_eq!(parse_assignment(&[0]), None);
    }
}
