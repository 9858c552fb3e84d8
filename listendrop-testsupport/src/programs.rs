//! Two kinds of moments of one test run that must not overlap: a listendrop process
//! changing its programs (a daemon starting or stopping, `check`, `trace`, `unpin`, the
//! [`crate::witness`] starting) and a scenario whose drops are compared exactly with the
//! kernel's.
//!
//! A count compared with the kernel's must not depend on what other tests of the binary
//! attach at that moment, and a difference must name every eBPF link that changed while it
//! counted. (The one loss measured on the 6.18 host, frees the kernel hands to no eBPF
//! program, comes with or without programs changing: docs/design.md and
//! [`crate::witness`].) Tests run daemons side by side; this keeps their start and stop out
//! of the moments where a test of the same test binary counts (one lock per process: test
//! binaries run one after another).
//!
//! Unlike a read-write lock, moments of one kind share the lock with each other: daemons
//! start together and scenarios count together, only never a start next to a count. A
//! kind that waits holds new entries of the other kind off, so neither starves.
//!
//! While scenarios count, the host's eBPF links are watched: any link attached or
//! detached meanwhile (by a process outside this lock, or a daemon after it said it was
//! ready) is noted, and a count that differs from the kernel's names it
//! ([`changes_while_counting`]).

use std::{
    collections::BTreeMap,
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

/// Which kind of moment holds or wants the lock.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Changing,
    Counting,
}

impl Kind {
    fn other(self) -> Self {
        match self {
            Self::Changing => Self::Counting,
            Self::Counting => Self::Changing,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

struct State {
    /// Guards alive of the kind in `holder` (0: free).
    held: usize,
    holder: Option<Kind>,
    /// Threads waiting, per kind.
    waiting: [usize; 2],
    /// Threads of the holder's kind that were waiting when it took the lock, and may
    /// still join while the other kind waits.
    batch: usize,
    /// The kind whose turn it is once the lock is free: the one that waited while the
    /// other held it (a free lock is not raced for by a kind that just had it).
    turn: Option<Kind>,
    /// The host's links when counting took the lock, and when.
    counting_since: Option<(Instant, BTreeMap<u32, String>)>,
}

impl State {
    fn may_enter(&self, kind: Kind) -> bool {
        match self.holder {
            None => self
                .turn
                .is_none_or(|turn| turn == kind || self.waiting[turn.index()] == 0),
            // Joining one's own kind while the other kind does not wait, or with those
            // that waited together.
            Some(holder) => {
                holder == kind && (self.waiting[kind.other().index()] == 0 || self.batch > 0)
            }
        }
    }
}

static STATE: Mutex<State> = Mutex::new(State {
    held: 0,
    holder: None,
    waiting: [0, 0],
    batch: 0,
    turn: None,
    counting_since: None,
});
static CHANGED: Condvar = Condvar::new();

/// What changed among the host's links while scenarios counted (see the module's doc).
static CHANGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// When this test process first took the lock: the origin of the times in [`CHANGES`].
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Every link attached or detached on this host while scenarios of this test process
/// counted exactly, each with when: none of them should be, since a program attached or
/// detached beside ours can make the kernel skip ours (module doc).
pub fn changes_while_counting() -> Vec<String> {
    CHANGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Notes the links that differ between `before` (at `since`) and now.
fn note_changes(since: Instant, before: &BTreeMap<u32, String>) {
    let changes = diff(before, &crate::bpf::links());
    if changes.is_empty() {
        return;
    }
    let started = *STARTED.get_or_init(Instant::now);
    let (from, to) = (
        since.duration_since(started).as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    CHANGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!(
            "while counting from {from:.3} s to {to:.3} s of this test run: {}",
            changes.join(", ")
        ));
}

/// The links detached and attached between two readings (link ids only grow: one above
/// the newest of `before` was attached since, and a gap among those is one attached and
/// detached in between).
fn diff(before: &BTreeMap<u32, String>, after: &BTreeMap<u32, String>) -> Vec<String> {
    let newest = before.keys().next_back().copied().unwrap_or(0);
    let mut changes: Vec<String> = before
        .iter()
        .filter(|(id, _)| !after.contains_key(id))
        .map(|(id, what)| format!("link {id} ({what}) detached"))
        .collect();
    let attached: Vec<_> = after.range(newest.saturating_add(1)..).collect();
    changes.extend(
        attached
            .iter()
            .map(|(id, what)| format!("link {id} ({what}) attached")),
    );
    if let Some((&last, _)) = attached.last() {
        let gone = (last - newest) as usize - attached.len();
        if gone > 0 {
            changes.push(format!("{gone} more links attached and detached"));
        }
    }
    changes
}

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One moment of one kind; the lock is released when it drops (also while unwinding).
#[must_use = "the moment ends when the guard drops"]
pub struct Moment {
    kind: Kind,
}

fn enter(kind: Kind) -> Moment {
    let mut state = state();
    state.waiting[kind.index()] += 1;
    while !state.may_enter(kind) {
        state = CHANGED.wait(state).unwrap_or_else(PoisonError::into_inner);
    }
    state.waiting[kind.index()] -= 1;
    if state.holder.is_none() {
        state.holder = Some(kind);
        state.turn = None;
        state.batch = state.waiting[kind.index()];
        if kind == Kind::Counting {
            STARTED.get_or_init(Instant::now);
            state.counting_since = Some((Instant::now(), crate::bpf::links()));
        }
    } else {
        state.batch = state.batch.saturating_sub(1);
    }
    state.held += 1;
    Moment { kind }
}

impl Drop for Moment {
    fn drop(&mut self) {
        let mut state = state();
        debug_assert_eq!(state.holder, Some(self.kind));
        state.held -= 1;
        if state.held == 0 {
            if let Some((since, links)) = state.counting_since.take() {
                note_changes(since, &links);
            }
            state.holder = None;
            state.batch = 0;
            let other = self.kind.other();
            state.turn = (state.waiting[other.index()] > 0).then_some(other);
        }
        CHANGED.notify_all();
    }
}

/// A scenario that counts exactly: waits while a listendrop process of this test run
/// changes its programs. Never held across a daemon's start or stop, nor twice on one
/// thread.
pub fn counting_exactly() -> Moment {
    crate::witness::ensure();
    enter(Kind::Counting)
}

/// A listendrop process of this test run attaching or detaching programs: waits while a
/// scenario counts exactly. Other processes may change theirs at the same time.
pub fn changing_programs() -> Moment {
    enter(Kind::Changing)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        thread,
        time::Duration,
    };

    use super::*;

    #[test]
    fn links_that_came_and_went_while_counting_are_named() {
        let map = |ids: &[u32]| -> BTreeMap<u32, String> {
            ids.iter().map(|&id| (id, format!("prog {id}"))).collect()
        };
        assert!(diff(&map(&[3, 5]), &map(&[3, 5])).is_empty());
        assert_eq!(
            diff(&map(&[3, 5]), &map(&[3, 7, 9])),
            [
                "link 5 (prog 5) detached",
                "link 7 (prog 7) attached",
                "link 9 (prog 9) attached",
                "2 more links attached and detached",
            ]
        );
        assert_eq!(diff(&map(&[]), &map(&[1])), ["link 1 (prog 1) attached"]);
    }

    #[test]
    fn kinds_share_with_themselves_and_exclude_each_other() {
        let changing = Arc::new(AtomicUsize::new(0));
        let counting = Arc::new(AtomicUsize::new(0));
        let most_changing = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (changing, counting, most) =
                    (changing.clone(), counting.clone(), most_changing.clone());
                thread::spawn(move || {
                    for _ in 0..20 {
                        if i % 2 == 0 {
                            let _m = changing_programs();
                            let now = changing.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            assert_eq!(counting.load(Ordering::SeqCst), 0, "a count overlapped");
                            thread::sleep(Duration::from_millis(2));
                            changing.fetch_sub(1, Ordering::SeqCst);
                        } else {
                            let _m = counting_exactly();
                            counting.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(changing.load(Ordering::SeqCst), 0, "a change overlapped");
                            thread::sleep(Duration::from_millis(2));
                            counting.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            most_changing.load(Ordering::SeqCst) > 1,
            "changes never ran side by side"
        );
        let state = state();
        assert_eq!(
            (
                state.held,
                state.holder,
                state.waiting,
                state.batch,
                state.turn
            ),
            (0, None, [0, 0], 0, None)
        );
    }
}
