//! The failure switch every simulated port call goes through. A schedule arms faults with
//! probabilities; each call draws from the simulation's one seeded generator, so a seed replays
//! the same faults at the same calls.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};

/// A call a fault can be injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    /// `Transaction::commit`: the transaction fails after its records and offsets went in
    /// (must abort), or its outcome is unknown after it committed, or unknown without
    /// committing, or another producer fences it mid-commit.
    CommitAbortable,
    CommitUnknownCommitted,
    CommitUnknownNotCommitted,
    CommitFenced,
    /// `Transaction::send`: a delivery failure the transaction must abort for.
    SendAbortable,
    /// `Input::poll`: the brokers are briefly unreachable.
    PollUnreachable,
    /// `Group::seek` fails (the partition's fetcher is not ready): retried every turn.
    SeekFails,
    /// `Changelog::read_some` returns at most a few records (a slow restore).
    SlowRestore,
    /// `Group::committed` times out: the stable offsets did not come within the call's timeout
    /// (an open transaction holds them, or the coordinator is slow).
    OffsetFetchTimesOut,
    /// The changelog's broker is away: opening a changelog fails as unreachable, a read reads
    /// nothing.
    ChangelogUnreachable,
}

/// Odds per call, in thousandths.
#[derive(Clone, Debug, Default)]
pub struct FaultOdds(pub Vec<(Call, u32)>);

struct State {
    rng: SmallRng,
    odds: FaultOdds,
    fired: std::collections::BTreeMap<Call, u64>,
}

/// The simulation's seeded randomness and its armed faults.
#[derive(Clone)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    pub fn new(seed: u64) -> Faults {
        Faults(Arc::new(Mutex::new(State {
            rng: SmallRng::seed_from_u64(seed),
            odds: FaultOdds::default(),
            fired: Default::default(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn arm(&self, odds: FaultOdds) {
        self.state().odds = odds;
    }

    /// No more faults: the schedule lets the system settle.
    pub fn heal(&self) {
        self.state().odds = FaultOdds::default();
    }

    /// Whether `call` fails this time.
    pub fn fails(&self, call: Call) -> bool {
        let mut state = self.state();
        let Some(&(_, odds)) = state.odds.0.iter().find(|(c, _)| *c == call) else {
            return false;
        };
        let fails = state.rng.random_range(0..1000) < odds;
        if fails {
            *state.fired.entry(call).or_default() += 1;
        }
        fails
    }

    /// A number in `range`, from the simulation's generator (the scheduler's choices).
    pub fn pick(&self, range: std::ops::Range<u64>) -> u64 {
        self.state().rng.random_range(range)
    }

    /// How often each fault fired.
    pub fn fired(&self) -> Vec<(Call, u64)> {
        self.state().fired.iter().map(|(c, n)| (*c, *n)).collect()
    }
}
