//! The hashing slots, handed out fairly (issue 19, item 4): a first-come queue let one
//! caller's flood of 32 × 64 logins make a legitimate login wait about 11 s.
//!
//! Each hash names its *flow*: who it is for, as the service sees it (the peer and the
//! client IP the application passed). Waiting hashes queue per flow, and a freed slot goes
//! to the next flow in turn, round robin, so a flow with thousands waiting gets one slot in
//! turn like a flow with one: a flood delays the flooder.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Whose hash it is; hashes of one flow wait in order, flows take turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow(pub u64);

/// The slots and the queues.
pub(super) struct FairGate {
    /// Behind one lock: each operation is a few queue steps.
    state: Mutex<GateState>,
}

/// What the lock guards.
struct GateState {
    /// Slots nobody holds.
    free: usize,
    /// The waiting hashes of each flow that has any, oldest first.
    waiting: HashMap<Flow, VecDeque<oneshot::Sender<()>>>,
    /// The flows with waiting hashes, in the order they get the next slots.
    turns: VecDeque<Flow>,
}

/// One slot, held until dropped; the hash runs while it is held.
pub(super) struct Slot {
    /// Where it goes back.
    gate: Arc<FairGate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A hash waiting for its slot; if it gives up after the slot was sent, the slot goes on.
struct Waiter {
    /// Where the slot arrives.
    rx: Option<oneshot::Receiver<()>>,
    /// The gate, to pass on a slot that arrived too late.
    gate: Arc<FairGate>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl FairGate {
    /// `slots` slots, all free.
    pub(super) fn new(slots: usize) -> Arc<FairGate> {
        Arc::new(FairGate {
            state: Mutex::new(GateState {
                free: slots,
                waiting: HashMap::new(),
                turns: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // Every change under the lock is a queue step that cannot panic half-way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot for `flow`, behind the hashes of `flow` already waiting and in turn
    /// with every other flow. `None` only if the slot's sender vanished unsent, which
    /// `release` never does.
    pub(super) async fn acquire(self: &Arc<Self>, flow: Flow) -> Option<Slot> {
        let rx = {
            let mut state = self.lock();
            if state.free > 0 && state.turns.is_empty() {
                state.free -= 1;
                return Some(Slot { gate: self.clone() });
            }
            let (tx, rx) = oneshot::channel();
            let GateState { waiting, turns, .. } = &mut *state;
            let queue = waiting.entry(flow).or_default();
            if queue.is_empty() {
                turns.push_back(flow);
            }
            queue.push_back(tx);
            rx
        };
        let mut waiter = Waiter {
            rx: Some(rx),
            gate: self.clone(),
        };
        let arrived = match waiter.rx.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        // Received: the slot is this caller's now; the waiter must not pass it on.
        waiter.rx = None;
        arrived.then(|| Slot { gate: self.clone() })
    }

    /// Gives a slot back: to the first waiting hash of the next flow in turn, or to the free
    /// slots when nobody waits.
    fn release(&self) {
        let mut state = self.lock();
        while let Some(flow) = state.turns.pop_front() {
            let Some(queue) = state.waiting.get_mut(&flow) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&flow);
            } else {
                state.turns.push_back(flow);
            }
            // A waiter that gave up has dropped its receiver: try the next.
            if next.is_some_and(|tx| tx.send(()).is_ok()) {
                return;
            }
        }
        state.free += 1;
    }

    /// Slots nobody holds, for the tests.
    #[cfg(test)]
    pub(super) fn free(&self) -> usize {
        self.lock().free
    }

    /// Hashes waiting now, for the tests.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().waiting.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_flood_from_one_flow_waits_behind_one_hash_of_another() {
        let gate = FairGate::new(1);
        let held = gate.acquire(Flow(1)).await.expect("a free slot");
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        // The flooder queues a hundred hashes, then the victim one.
        for (flow, n) in (0..100).map(|n| (Flow(1), n)).chain([(Flow(2), 999)]) {
            let (gate, order_tx) = (gate.clone(), order_tx.clone());
            tasks.push(tokio::spawn(async move {
                let slot = gate.acquire(flow).await;
                let _ = order_tx.send(n);
                drop(slot);
            }));
            tokio::task::yield_now().await;
        }
        while gate.queued() < 101 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut seen = Vec::new();
        while seen.len() < 101 {
            seen.push(order.recv().await.expect("every hash runs"));
        }
        let victim = seen.iter().position(|&n| n == 999).expect("the victim ran");
        assert!(victim <= 1, "the victim ran {victim}th: {seen:?}");
        // The flooder's own hashes still run in the order they came.
        let flood: Vec<_> = seen.iter().copied().filter(|&n| n != 999).collect();
        assert_eq!(flood, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_passes_its_slot_on() {
        let gate = FairGate::new(1);
        let held = gate.acquire(Flow(1)).await.expect("a free slot");
        let quitter = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _slot = gate.acquire(Flow(2)).await;
            }
        });
        while gate.queued() < 1 {
            tokio::task::yield_now().await;
        }
        quitter.abort();
        let _ = quitter.await;
        drop(held);
        // The one slot is free again, not lost with the caller that went away.
        let got = tokio::time::timeout(Duration::from_secs(5), gate.acquire(Flow(3))).await;
        assert!(got.is_ok_and(|slot| slot.is_some()), "the slot was lost");
    }
}
