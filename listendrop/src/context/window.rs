//! Values kept over a sliding window of inventory passes: the recent drop rate and the
//! accept queue high-water mark.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// The window of [`Window`]: the last minute.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One value per pass over the last [`WINDOW`], plus the newest pass at least a window
/// old (so that a rate spans the whole window).
#[derive(Debug)]
pub struct Window<T> {
    passes: VecDeque<(Instant, T)>,
}

impl<T> Default for Window<T> {
    fn default() -> Self {
        Self {
            passes: VecDeque::new(),
        }
    }
}

impl<T> Window<T> {
    /// Appends the value of a pass at `now`, and drops what fell out of the window.
    pub fn push(&mut self, now: Instant, value: T) {
        self.passes.push_back((now, value));
        while self.passes.len() > 2
            && self
                .passes
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
        {
            self.passes.pop_front();
        }
    }

    /// The oldest and newest passes, and the time between them.
    pub fn span(&self) -> Option<(&T, &T, Duration)> {
        let (first_at, first) = self.passes.front()?;
        let (last_at, last) = self.passes.back()?;
        Some((first, last, last_at.duration_since(*first_at)))
    }

    /// Every pass's value, oldest first.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.passes.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_pass_older_than_the_window() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.push(t0, 1);
        w.push(t0 + Duration::from_secs(30), 2);
        w.push(t0 + Duration::from_secs(70), 3);
        let (first, last, span) = w.span().unwrap();
        assert_eq!((*first, *last), (1, 3), "30 s is inside the window at 70 s");
        assert_eq!(span, Duration::from_secs(70));
        w.push(t0 + Duration::from_secs(100), 4);
        let (first, _, _) = w.span().unwrap();
        assert_eq!(
            *first, 2,
            "the pass at 30 s is the newest a window old at 100 s"
        );
        assert_eq!(w.values().copied().collect::<Vec<_>>(), [2, 3, 4]);
    }
}
