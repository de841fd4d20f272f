//! The due heap: which schedule's next tick is due first, so that a pass of the loop costs the
//! ticks due, not the number of schedules.
//!
//! Each enabled schedule is an [`Entry`] with a cursor (the newest fire time this replica has
//! handled) and its next tick after the cursor; the [`DueHeap`] orders entries by that tick's due
//! time. Seeding and every re-seed go through `schedule::live_after`, the one boundary shared
//! with catch-up (see `catch_up.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Utc};
use upkeep_shared::config::ScheduleSettings;
use upkeep_shared::queue::Queue;
use upkeep_shared::schedule::{ScheduleSpec, Tick};

/// One configured schedule with everything needed to fire it.
pub(crate) struct Entry {
    pub(crate) settings: ScheduleSettings,
    pub(crate) spec: ScheduleSpec,
    pub(crate) queue: Queue,
    pub(crate) max_attempts: u32,
    /// The newest nominal fire time this replica has handled (claimed or seen claimed).
    pub(crate) cursor: DateTime<Utc>,
    /// The first tick after `cursor`, as last computed: the schedule's key in [`DueHeap`].
    pub(crate) next: Option<Tick>,
}

/// The schedules by next due time: a min-heap of `(due_at, entry index)`, one item per
/// schedule that has a next tick.
#[derive(Default)]
pub(crate) struct DueHeap {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
}

impl DueHeap {
    pub(crate) fn push(&mut self, entry_idx: usize, entry: &Entry) {
        if let Some(tick) = entry.next {
            self.heap.push(Reverse((tick.due_at, entry_idx)));
        }
    }

    pub(crate) fn next_due(&self) -> Option<DateTime<Utc>> {
        self.heap.peek().map(|Reverse((due_at, _))| *due_at)
    }

    /// Takes every schedule due at `now` off the heap.
    pub(crate) fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<usize> {
        let mut due = Vec::new();
        while let Some(Reverse((due_at, entry_idx))) = self.heap.peek().copied() {
            if due_at > now {
                break;
            }
            self.heap.pop();
            due.push(entry_idx);
        }
        due
    }
}
