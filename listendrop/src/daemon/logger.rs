//! One log line per event, naming the owner of the socket that saw it, and the diagnosis
//! when a listener starts dropping.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::state::Shared;
use crate::{
    events::{Event, LogLine},
    inventory::diagnosis::{self, Facts},
    listener::ListenerId,
    util::lock,
};

/// A listener quiet for this long is "starting to drop" again at its next drop.
const QUIET: Duration = Duration::from_secs(300);

/// Logs each event with its owner, and the diagnosis when a listener starts dropping.
pub(super) struct DropLogger {
    shared: Arc<Shared>,
    last_drop: HashMap<ListenerId, Instant>,
}

impl DropLogger {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            last_drop: HashMap::new(),
        }
    }

    pub(super) fn log(&mut self, event: &Event) {
        let id = &event.listener;
        if !self.shared.filter.allows(id) {
            return;
        }
        // Copy what the lines need, so that no log write happens under the lock.
        let view = Arc::clone(&lock(&self.shared.context).view);
        let owner = view.owner(id, event.cookie);
        tracing::info!(target: "listendrop::drop", "{}", LogLine { event, owner });
        if !event.is_drop() {
            return;
        }
        let now = Instant::now();
        let quiet = self
            .last_drop
            .insert(*id, now)
            .is_none_or(|last| now.duration_since(last) > QUIET);
        if quiet {
            let owner = owner.map_or_else(
                || "unknown owner".into(),
                |o| match &o.container {
                    Some(c) => format!("{}/{}, container {}", o.pid, o.comm, c.display_name()),
                    None => format!("{}/{}", o.pid, o.comm),
                },
            );
            let listener = id.socket_addr();
            tracing::warn!(
                target: "listendrop::diagnosis",
                "listener {listener} (netns {}, {owner}) started dropping handshakes ({})",
                id.netns,
                event.reason.as_str()
            );
            for line in &diagnose_drop(event, view.facts(id)) {
                tracing::warn!(target: "listendrop::diagnosis", "listener {listener}: {line}");
            }
        }
        // Forget listeners quiet for long, so the map stays bounded.
        if self.last_drop.len() > 10_000 {
            self.last_drop
                .retain(|_, at| now.duration_since(*at) <= QUIET);
        }
    }
}

/// The diagnosis of a listener that starts dropping: what the inventory knows of it (or
/// of its namespace) with this drop's reason and the accept queue the kernel saw when it
/// dropped.
fn diagnose_drop(event: &Event, facts: Option<Facts>) -> Vec<String> {
    let Some(mut facts) = facts else {
        return Vec::new();
    };
    if event.accept_queue.limit > 0 {
        facts.accept_queue_len = event.accept_queue.len;
        facts.accept_queue_limit = event.accept_queue.limit;
        facts.syn_recv = event.syn_queue;
    } else if facts.accept_queue_limit == 0 {
        // Neither the kernel (a failed read) nor the inventory gave the queue: the rules
        // about it would talk about a limit of 0.
        return Vec::new();
    }
    *facts
        .drops
        .entry(event.reason.as_str().to_owned())
        .or_default() += 1;
    diagnosis::diagnose(&facts)
}

#[cfg(test)]
mod tests {
    use listendrop_common::{DropEvent, Reason};

    use super::*;
    use crate::events::from_raw;

    #[test]
    fn a_drop_is_diagnosed_with_its_reason_and_the_queue_it_met() {
        let mut raw = DropEvent::ZERO;
        raw.family = listendrop_common::AF_INET;
        raw.listener.family = listendrop_common::AF_INET as u8;
        raw.listener.reason = Reason::AckAcceptQueueFull as u8;
        raw.accept_queue_len = 4;
        raw.accept_queue_max = 3;
        let mut event = from_raw(&raw).unwrap();
        // The inventory sampled an empty queue and knew no drop: no diagnosis of its own.
        let facts = Facts {
            accept_queue_limit: 3,
            somaxconn: 4096,
            syncookies: 1,
            synack_retries: 5,
            owner_busy: Some(false),
            ..Facts::default()
        };
        assert!(diagnosis::diagnose(&facts).is_empty());
        let lines = diagnose_drop(&event, Some(facts));
        let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
        assert!(
            has("backlog 3 caps the accept queue below net.core.somaxconn 4096"),
            "{lines:?}"
        );
        assert!(
            has("accept queue full while the owner is idle"),
            "{lines:?}"
        );
        assert!(has("final ACKs ignored"), "{lines:?}");
        // Not even its namespace in the inventory yet: nothing to say beyond the drop.
        assert!(diagnose_drop(&event, None).is_empty());
        // No queue from the kernel nor the inventory: no sentence about a limit of 0.
        event.accept_queue.len = 0;
        event.accept_queue.limit = 0;
        let namespace_only = Facts {
            somaxconn: 4096,
            ..Facts::default()
        };
        assert!(diagnose_drop(&event, Some(namespace_only)).is_empty());
    }
}
