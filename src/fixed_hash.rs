//! Hash maps whose iteration order is the same on every run (foldhash with a fixed seed instead
//! of a per-process random one). Operators emit and flush in map order, so with fixed seeds the
//! records an instance sends come in the same order for the same input: the deterministic
//! simulation replays a seed exactly, and a production run's output order is reproducible. The
//! keys are eddy's own group and window keys, so flooding collisions would need an input crafted
//! against foldhash's fixed seed; the maps stay bounded by the state they index either way.

pub type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;
pub type HashSet<K> = hashbrown::HashSet<K, foldhash::fast::FixedState>;
