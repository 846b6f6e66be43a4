//! The memory budget for HTTP/1 request heads still being read (`limits.header_memory`),
//! shared by every client connection.
//!
//! SECURITY: a client may hold an unfinished head for up to `header_read_timeout`, and
//! each holds up to four times `max_header_size` while it is read (twice, in a buffer
//! that doubles as it grows). Thousands of connections doing so at once would take
//! memory without bound. The budget caps their sum: when a head would take it
//! past the budget, the heads arriving slowest are cut first. A client on a slow link
//! that is nearly done keeps its place over one that trickles.
//!
//! A head is charged from its first read that leaves it unfinished, or from its first
//! bytes when they arrive while the previous request is still being answered. One that
//! arrives whole in one read is never charged, so ordinary traffic never takes the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus::{IntCounter, IntGauge};

use super::listener::Activity;

/// The budget, and every unfinished head charged to it.
pub struct HeadMemory {
    limit: usize,
    heads: Mutex<Heads>,
    /// `portcullis_header_memory_bytes`.
    in_use: IntGauge,
    /// `portcullis_header_memory_cuts_total`.
    cuts: IntCounter,
}

#[derive(Default)]
struct Heads {
    used: usize,
    next_id: u64,
    charged: HashMap<u64, Charged>,
}

/// One unfinished head, as the budget sees it.
struct Charged {
    /// Memory its buffer holds.
    held: usize,
    /// Bytes of the head received so far.
    received: usize,
    since: Instant,
    cut: Arc<AtomicBool>,
    /// Woken when the head is cut, to close its connection.
    activity: Arc<Activity>,
}

impl Charged {
    /// Whether this head arrives more slowly than `other`: fewer bytes per second,
    /// or as few and begun earlier.
    fn slower_than(&self, other: &Charged, now: Instant) -> bool {
        let mine = now.duration_since(self.since).as_nanos();
        let theirs = now.duration_since(other.since).as_nanos();
        // received / elapsed, compared without dividing.
        let my_pace = self.received as u128 * theirs;
        let their_pace = other.received as u128 * mine;
        my_pace < their_pace || (my_pace == their_pace && self.since < other.since)
    }
}

impl HeadMemory {
    /// A budget of `limit` bytes, reported in `in_use` and `cuts`.
    pub fn new(limit: usize, in_use: IntGauge, cuts: IntCounter) -> HeadMemory {
        HeadMemory {
            limit,
            heads: Mutex::new(Heads::default()),
            in_use,
            cuts,
        }
    }

    /// A charge for one head, empty until [`HeadCharge::hold`].
    pub fn charge(self: &Arc<Self>, activity: &Arc<Activity>) -> HeadCharge {
        HeadCharge {
            memory: self.clone(),
            activity: activity.clone(),
            id: None,
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    fn heads(&self) -> std::sync::MutexGuard<'_, Heads> {
        self.heads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts the slowest heads until the budget holds again. Usually one or two go, so
    /// each is found by a scan rather than by sorting them all.
    fn enforce(&self, heads: &mut Heads) {
        let now = Instant::now();
        while heads.used > self.limit {
            let slowest = heads
                .charged
                .iter()
                .reduce(|slowest, head| {
                    if head.1.slower_than(slowest.1, now) {
                        head
                    } else {
                        slowest
                    }
                })
                .map(|(id, _)| *id);
            let Some(head) = slowest.and_then(|id| heads.charged.remove(&id)) else {
                break;
            };
            heads.used -= head.held;
            head.cut.store(true, Ordering::Relaxed);
            head.activity.wake();
            self.cuts.inc();
        }
        self.publish(heads);
    }

    fn publish(&self, heads: &Heads) {
        self.in_use
            .set(i64::try_from(heads.used).unwrap_or(i64::MAX));
    }
}

/// One connection's unfinished head, charged to the budget until dropped (when the head
/// is complete, refused or its connection closes).
pub struct HeadCharge {
    memory: Arc<HeadMemory>,
    activity: Arc<Activity>,
    id: Option<u64>,
    cut: Arc<AtomicBool>,
}

impl HeadCharge {
    /// Charges the head at `held` bytes of memory with `received` bytes of it read. Cuts
    /// the slowest heads, this one among them, if that takes the budget past its limit.
    pub fn hold(&mut self, held: usize, received: usize) {
        if self.is_cut() {
            return;
        }
        let mut heads = self.memory.heads();
        let heads = &mut *heads;
        match self.id.and_then(|id| heads.charged.get_mut(&id)) {
            Some(head) => {
                heads.used = heads.used - head.held + held;
                head.held = held;
                head.received = received;
            }
            None => {
                let id = heads.next_id;
                heads.next_id += 1;
                heads.used += held;
                heads.charged.insert(
                    id,
                    Charged {
                        held,
                        received,
                        since: Instant::now(),
                        cut: self.cut.clone(),
                        activity: self.activity.clone(),
                    },
                );
                self.id = Some(id);
            }
        }
        self.memory.enforce(heads);
    }

    /// Whether the budget cut this head: its connection is to close.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }
}

impl Drop for HeadCharge {
    fn drop(&mut self) {
        let Some(id) = self.id else {
            return;
        };
        let mut heads = self.memory.heads();
        if let Some(head) = heads.charged.remove(&id) {
            heads.used -= head.held;
            self.memory.publish(&heads);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> Arc<HeadMemory> {
        let in_use = IntGauge::new("in_use", "test").unwrap();
        let cuts = IntCounter::new("cuts", "test").unwrap();
        Arc::new(HeadMemory::new(limit, in_use, cuts))
    }

    fn activity() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    #[test]
    fn heads_within_the_budget_are_left_alone() {
        let memory = budget(100);
        let mut a = memory.charge(&activity());
        let mut b = memory.charge(&activity());
        a.hold(50, 10);
        b.hold(50, 10);
        assert!(!a.is_cut() && !b.is_cut());
        assert_eq!(memory.in_use.get(), 100);
        assert_eq!(memory.cuts.get(), 0);
    }

    #[test]
    fn the_slowest_head_is_cut_first() {
        let memory = budget(100);
        let mut slow = memory.charge(&activity());
        let mut fast = memory.charge(&activity());
        slow.hold(40, 1);
        fast.hold(40, 30);
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Growing `fast` takes the budget past its limit; `slow` has sent less in as long.
        fast.hold(70, 60);
        assert!(slow.is_cut());
        assert!(!fast.is_cut());
        assert_eq!(memory.in_use.get(), 70);
        assert_eq!(memory.cuts.get(), 1);
    }

    #[test]
    fn a_head_that_alone_passes_the_budget_is_cut() {
        let memory = budget(100);
        let mut head = memory.charge(&activity());
        head.hold(150, 150);
        assert!(head.is_cut());
        assert_eq!(memory.in_use.get(), 0);
        // A cut head is charged no more.
        head.hold(10, 10);
        assert_eq!(memory.in_use.get(), 0);
    }

    #[test]
    fn as_many_heads_are_cut_as_the_budget_needs() {
        let memory = budget(100);
        let mut heads: Vec<HeadCharge> = (0..5).map(|_| memory.charge(&activity())).collect();
        for (received, head) in heads.iter_mut().enumerate() {
            head.hold(20, received);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        // 100 in use; the last head grows by 50, so the three slowest go.
        heads[4].hold(70, 100);
        let cut: Vec<bool> = heads.iter().map(HeadCharge::is_cut).collect();
        assert_eq!(cut, [true, true, true, false, false]);
        assert_eq!(memory.in_use.get(), 90);
    }

    #[test]
    fn a_dropped_charge_gives_its_memory_back() {
        let memory = budget(100);
        let mut head = memory.charge(&activity());
        head.hold(60, 60);
        drop(head);
        assert_eq!(memory.in_use.get(), 0);
        let mut next = memory.charge(&activity());
        next.hold(90, 90);
        assert!(!next.is_cut());
    }
}
