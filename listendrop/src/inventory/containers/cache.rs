//! Container identities by container id: resolved once per container, kept while the
//! container owns a listener, forgotten with it.
//!
//! Each inventory pass marks the containers it meets; at its end, those it did not meet
//! (the container is gone, or no longer owns a listener) are dropped. So the cache never
//! holds more than the containers of one pass, and a capacity bounds even that: beyond it
//! the entries met longest ago go first. An identity some source could not complete is
//! kept with a time to try again; until then it is used as it is.

use std::{collections::HashMap, sync::Arc, time::Instant};

use super::ContainerIdentity;

/// What the cache knows of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Resolved, nothing to retry (or not yet time to).
    Fresh(Arc<ContainerIdentity>),
    /// Resolved in part, and it is time to try the missing sources again.
    Due(Arc<ContainerIdentity>),
    /// Never resolved.
    Missing,
}

#[derive(Debug)]
struct Entry {
    identity: Arc<ContainerIdentity>,
    /// The pass that last met it.
    seen: u64,
    /// When to try the sources that failed again; `None` when it is complete.
    retry_at: Option<Instant>,
}

/// Identities by container id, bounded.
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<String, Entry>,
    capacity: usize,
    pass: u64,
}

impl Cache {
    /// An empty cache of at most `capacity` containers.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            pass: 0,
        }
    }

    /// Starts a pass: what is not met from now on until [`Cache::end_pass`] is dropped then.
    pub fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// What is known of container `id` at `now`; marks it as met by this pass.
    pub fn lookup(&mut self, id: &str, now: Instant) -> Lookup {
        let Some(entry) = self.entries.get_mut(id) else {
            return Lookup::Missing;
        };
        entry.seen = self.pass;
        match entry.retry_at {
            Some(at) if now >= at => Lookup::Due(Arc::clone(&entry.identity)),
            _ => Lookup::Fresh(Arc::clone(&entry.identity)),
        }
    }

    /// The identity of `id`, if cached (does not mark it).
    pub fn get(&self, id: &str) -> Option<Arc<ContainerIdentity>> {
        self.entries.get(id).map(|e| Arc::clone(&e.identity))
    }

    /// Keeps `identity` (met by this pass); `retry_at` when a source could not complete
    /// it. Evicts the entries met longest ago when over capacity.
    pub fn insert(&mut self, identity: ContainerIdentity, retry_at: Option<Instant>) {
        let id = identity.id.clone();
        self.entries.insert(
            id,
            Entry {
                identity: Arc::new(identity),
                seen: self.pass,
                retry_at,
            },
        );
        if self.entries.len() > self.capacity {
            let excess = self.entries.len() - self.capacity;
            let mut by_age: Vec<(u64, String)> = self
                .entries
                .iter()
                .map(|(id, e)| (e.seen, id.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, id) in by_age.into_iter().take(excess) {
                self.entries.remove(&id);
            }
        }
    }

    /// Ends the pass: forgets every container it did not meet. Returns how many.
    pub fn end_pass(&mut self) -> usize {
        let before = self.entries.len();
        let pass = self.pass;
        self.entries.retain(|_, e| e.seen == pass);
        before - self.entries.len()
    }

    /// How many containers are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn identity(id: &str) -> ContainerIdentity {
        ContainerIdentity {
            id: id.to_owned(),
            ..ContainerIdentity::default()
        }
    }

    #[test]
    fn containers_not_met_by_a_pass_are_forgotten() {
        let now = Instant::now();
        let mut cache = Cache::new(10);
        cache.begin_pass();
        cache.insert(identity("a"), None);
        cache.insert(identity("b"), None);
        assert_eq!(cache.end_pass(), 0);
        cache.begin_pass();
        assert!(matches!(cache.lookup("a", now), Lookup::Fresh(_)));
        assert_eq!(cache.end_pass(), 1, "b is gone");
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.lookup("b", now), Lookup::Missing);
    }

    #[test]
    fn an_incomplete_identity_is_due_again_at_its_time() {
        let now = Instant::now();
        let mut cache = Cache::new(10);
        cache.begin_pass();
        cache.insert(identity("a"), Some(now + Duration::from_secs(60)));
        assert!(matches!(cache.lookup("a", now), Lookup::Fresh(_)));
        assert!(matches!(
            cache.lookup("a", now + Duration::from_secs(61)),
            Lookup::Due(_)
        ));
        cache.insert(identity("a"), None);
        assert!(matches!(
            cache.lookup("a", now + Duration::from_secs(61)),
            Lookup::Fresh(_)
        ));
    }

    #[test]
    fn bounded_by_its_capacity_oldest_first() {
        let now = Instant::now();
        let mut cache = Cache::new(2);
        cache.begin_pass();
        cache.insert(identity("old"), None);
        cache.begin_pass();
        cache.insert(identity("b"), None);
        cache.insert(identity("c"), None);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.lookup("old", now), Lookup::Missing, "met longest ago");
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
    }
}
