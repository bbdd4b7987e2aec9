// tollgate patch 23: the two pipes that carry `HttpTask`s between the
// downstream and upstream halves of an HTTP/1 proxied request
// (`proxy_1to1`), in place of two tokio `mpsc` channels.
//
// A tokio bounded channel allocates its shared state (padded to cache
// lines) and then a block of 32 slots for the first message, and every
// send and receive goes through a semaphore and a lock-free list made for
// many senders on many threads. These pipes have one sender and one
// receiver, both polled by the same task (the halves are joined), and hold
// at most `TASK_BUFFER_SIZE` (4) tasks: one allocation each, slots inline,
// and a lock that is never contended. The API is the subset of tokio's that
// `proxy_h1` uses, with the same meaning: a permit holds one slot until it
// sends or is dropped; `send` and `reserve` wait for a free slot and fail
// once the receiver is gone; `recv` yields what was sent, then `None` once
// the sender is gone; tasks still in the pipe when the receiver goes are
// dropped with it.

use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::TASK_BUFFER_SIZE;

const SLOTS: usize = TASK_BUFFER_SIZE;

struct State<T> {
    /// A ring: `len` tasks from `head`.
    slots: [Option<T>; SLOTS],
    head: usize,
    len: usize,
    /// Slots promised to permits not yet used.
    reserved: usize,
    sender_gone: bool,
    receiver_gone: bool,
    /// Who to wake when a task arrives or the sender goes.
    receiver_waiting: Option<Waker>,
    /// Who to wake when a slot frees up or the receiver goes.
    sender_waiting: Option<Waker>,
}

struct Shared<T>(Mutex<State<T>>);

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock was held leaves nothing half-done here.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// A pipe for at most `TASK_BUFFER_SIZE` tasks in flight.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared(Mutex::new(State {
        slots: Default::default(),
        head: 0,
        len: 0,
        reserved: 0,
        sender_gone: false,
        receiver_gone: false,
        receiver_waiting: None,
        sender_waiting: None,
    })));
    (Sender(shared.clone()), Receiver(shared))
}

/// The sending end; dropping it ends the pipe for the receiver.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiving end; dropping it closes the pipe for the sender.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// One reserved slot.
pub(crate) struct Permit<'a, T> {
    sender: &'a Sender<T>,
    used: bool,
}

/// The receiver is gone; the task comes back.
pub(crate) struct SendError<T>(pub T);

/// Why `try_reserve` found no slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// Every slot is taken or promised.
    Full,
    /// The receiver is gone.
    Closed,
}

impl<T> Sender<T> {
    /// Takes a slot for a permit, with the lock held.
    fn take_slot(state: &mut State<T>) -> Result<(), TrySendError> {
        if state.receiver_gone {
            Err(TrySendError::Closed)
        } else if state.len + state.reserved < SLOTS {
            state.reserved += 1;
            Ok(())
        } else {
            Err(TrySendError::Full)
        }
    }

    fn permit(&self) -> Permit<'_, T> {
        Permit {
            sender: self,
            used: false,
        }
    }

    /// A slot now, or why not.
    pub fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError> {
        Self::take_slot(&mut self.0.lock()).map(|()| self.permit())
    }

    /// Waits for a slot; fails once the receiver is gone.
    pub async fn reserve(&self) -> Result<Permit<'_, T>, SendError<()>> {
        poll_fn(|cx| {
            // One lock for the check and the waker: a slot freed in
            // between cannot go unnoticed.
            let mut state = self.0.lock();
            match Self::take_slot(&mut state) {
                Ok(()) => Poll::Ready(Ok(self.permit())),
                Err(TrySendError::Closed) => Poll::Ready(Err(SendError(()))),
                Err(TrySendError::Full) => {
                    remember(&mut state.sender_waiting, cx);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Waits for a slot and sends; the task comes back if the receiver is gone.
    pub async fn send(&self, task: T) -> Result<(), SendError<T>> {
        match self.reserve().await {
            Ok(permit) => {
                permit.send(task);
                Ok(())
            }
            Err(_) => Err(SendError(task)),
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.lock().receiver_gone
    }
}

impl<T> Permit<'_, T> {
    /// Puts the task in the reserved slot (dropped if the receiver went
    /// since the slot was reserved, as tokio's permit does).
    pub fn send(mut self, task: T) {
        self.used = true;
        let mut state = self.sender.0.lock();
        state.reserved -= 1;
        if state.receiver_gone {
            // `task` is dropped after the lock is let go: locals drop
            // before arguments.
            return;
        }
        let tail = (state.head + state.len) % SLOTS;
        state.slots[tail] = Some(task);
        state.len += 1;
        wake(&mut state.receiver_waiting);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        if !self.used {
            let mut state = self.sender.0.lock();
            state.reserved -= 1;
            wake(&mut state.sender_waiting);
        }
    }
}

impl<T> Receiver<T> {
    fn poll_recv(&mut self, cx: &Context<'_>) -> Poll<Option<T>> {
        let mut state = self.0.lock();
        if state.len > 0 {
            let head = state.head;
            let task = state.slots[head].take();
            state.head = (head + 1) % SLOTS;
            state.len -= 1;
            wake(&mut state.sender_waiting);
            return Poll::Ready(task);
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        remember(&mut state.receiver_waiting, cx);
        Poll::Pending
    }

    /// The next task, or `None` once the sender is gone and the pipe empty.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.sender_gone = true;
        wake(&mut state.receiver_waiting);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // The tasks left are dropped after the lock is let go.
        let left = std::mem::take(&mut state.slots);
        state.len = 0;
        wake(&mut state.sender_waiting);
        drop(state);
        drop(left);
    }
}

impl<T> fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the task pipe's receiver is gone")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full => "the task pipe is full",
            TrySendError::Closed => "the task pipe's receiver is gone",
        })
    }
}

impl std::error::Error for TrySendError {}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn tasks_come_out_in_order_and_then_none() {
        let (tx, mut rx) = channel::<u32>();
        for i in 0..3 {
            tx.send(i).now_or_never().unwrap().unwrap();
        }
        drop(tx);
        let got: Vec<_> = (0..4).map(|_| rx.recv().now_or_never().unwrap()).collect();
        assert_eq!(got, vec![Some(0), Some(1), Some(2), None]);
    }

    #[test]
    fn a_full_pipe_waits_and_a_permit_holds_its_slot() {
        let (tx, mut rx) = channel::<u32>();
        let held = tx.try_reserve().unwrap();
        for i in 0..SLOTS as u32 - 1 {
            tx.send(i).now_or_never().unwrap().unwrap();
        }
        assert_eq!(tx.try_reserve().unwrap_err(), TrySendError::Full);
        assert!(tx.reserve().now_or_never().is_none());
        drop(held);
        let again = tx.try_reserve().unwrap();
        again.send(9);
        assert_eq!(rx.recv().now_or_never(), Some(Some(0)));
        assert!(tx.try_reserve().is_ok());
    }

    #[test]
    fn a_gone_receiver_closes_the_pipe() {
        let (tx, rx) = channel::<u32>();
        let permit = tx.try_reserve().unwrap();
        drop(rx);
        assert!(tx.is_closed());
        permit.send(1);
        assert_eq!(tx.try_reserve().unwrap_err(), TrySendError::Closed);
        assert_eq!(tx.send(2).now_or_never().unwrap().unwrap_err().0, 2);
    }
}
