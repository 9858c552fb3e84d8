//! Two kinds of moments of one test run that must not overlap: a listendrop process
//! changing its programs (a daemon starting or stopping, `check`, `trace`, `unpin`) and a
//! scenario whose drops are compared exactly with the kernel's.
//!
//! Measured on the 6.18 host (docs/design.md, "Programs attached next to ours"): while
//! another process attaches and detaches `tp_btf` programs on `kfree_skb`, the kernel now
//! and then runs no raw tracepoint program for a `kfree_skb` that its own trace event
//! records, and counts no miss for it. Tests run daemons side by side; this keeps their
//! start and stop out of the moments where a test of the same test binary counts (one
//! lock per process: test binaries run one after another).
//!
//! Unlike a read-write lock, moments of one kind share the lock with each other: daemons
//! start together and scenarios count together, only never a start next to a count. A
//! kind that waits holds new entries of the other kind off, so neither starves.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

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
});
static CHANGED: Condvar = Condvar::new();

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
