//! NATS JetStream, the bus of seed 001: the only module that uses `async-nats`.
//!
//! A NATS source is read in *splits*, one per subject filter. [`SplitReaders`] reads each split
//! this instance owns from a position (a stream sequence) with an ephemeral, unacknowledged pull
//! consumer, on a runtime thread of its own, and hands the messages to the synchronous loop
//! through a bounded channel. Which instance owns a split, and where it resumes, is Kafka's
//! business (`runtime::sources`): the position is the committed offset of the split's partition
//! of an assignment topic, written in the same transaction as the outputs.

mod error;
mod publish;
mod readers;
mod settings;

pub use error::NatsError;
pub use publish::NatsPublisher;
pub use readers::{NatsMessage, SplitReaders, SplitSpec, StreamCheck};
pub use settings::NatsSettings;

/// Whether a NATS subject matches a filter (`*` one token, `>` one or more trailing tokens).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for (i, want) in filter.split('.').enumerate() {
        if want == ">" {
            return tokens.next().is_some() && i == filter.split('.').count() - 1;
        }
        match tokens.next() {
            Some(token) if want == "*" || want == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// Whether a filter is well formed: non-empty tokens, `>` only last.
pub fn valid_filter(filter: &str) -> bool {
    let tokens: Vec<&str> = filter.split('.').collect();
    !filter.is_empty()
        && tokens.iter().all(|t| {
            !t.is_empty()
                && !t.contains(char::is_whitespace)
                && (t.len() == 1 || !t.contains(['*', '>']))
        })
        && tokens[..tokens.len() - 1].iter().all(|t| *t != ">")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_filters_token_by_token() {
        assert!(subject_matches("user.created", "user.created"));
        assert!(subject_matches("user.*", "user.created"));
        assert!(!subject_matches("user.*", "user.created.v2"));
        assert!(subject_matches("user.>", "user.created.v2"));
        assert!(!subject_matches("user.>", "user"));
        assert!(subject_matches(">", "order.placed"));
        assert!(!subject_matches("order.placed", "order.placed.v1"));
        assert!(subject_matches("*.created.*", "user.created.v1"));
    }

    #[test]
    fn filters_are_checked() {
        for ok in ["user.created", "user.*", "user.>", ">", "*.created.v2"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "user..created", "user.>.x", "us*er", "a b", "user."] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }
}
