//! Keeps an [`AggregateIndex`] up to date from the output topics, read `read_committed` from the
//! beginning: output of aborted transactions never reaches the index, and every instance indexes
//! every partition, so any instance answers for the whole application.

use super::index::AggregateIndex;
use crate::kafka::{ClientSettings, TopicTail};
use crate::task::AggregateRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Follows `topics` on a thread of its own until `stop` is set.
pub fn spawn_materializer(
    settings: ClientSettings,
    topics: Vec<String>,
    index: Arc<Mutex<AggregateIndex>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("eddy-api-index".into())
        .spawn(move || {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            // The output topics may not exist until the runtime creates them.
            let tail = loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match TopicTail::new_when_present(&settings, &refs) {
                    Ok(Some(tail)) => break tail,
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "query API: cannot read the output topics yet"),
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            let mut warned = false;
            while !stop.load(Ordering::Relaxed) {
                let Some(record) = tail.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let Some(value) = record.value else { continue };
                let parsed: Result<AggregateRecord, _> = serde_json::from_slice(&value);
                let result = match parsed {
                    Ok(aggregate) => index.lock().expect("index lock").insert(&aggregate),
                    Err(e) => Err(format!("not an eddy aggregate: {e}")),
                };
                if let (Err(reason), false) = (result, warned) {
                    warned = true;
                    tracing::warn!(topic = %record.topic, offset = record.offset, %reason, "query API: skipping output records it cannot read (logged once)");
                }
            }
        })
}
