//! [`Queue`]: the bounded queue between the threads that record audit events and the
//! [`BackgroundSink`](super::BackgroundSink)'s writer thread.
//!
//! A mutex around a `VecDeque`, two condition variables, and flags that say who waits,
//! so that a recording thread signals the writer only when it sleeps, and the writer
//! wakes the recording threads that wait for room once per batch it takes, not once per
//! record (as a channel's receiver does, one record at a time). The writer takes up to
//! [`MAX_BATCH_RECORDS`] at once.

use std::collections::VecDeque;
use std::sync::mpsc::SyncSender;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::background::MAX_BATCH_RECORDS;
use crate::audit::AuditEvent;

/// What goes through the queue.
#[allow(
    clippy::large_enum_variant,
    reason = "events go by value: no allocation per record on the request thread; flushes are rare"
)]
pub(super) enum Message {
    Record(AuditEvent),
    /// Write everything before this, checkpoint, then answer.
    Flush(SyncSender<()>),
}

/// Why [`Queue::push`] did not take an event.
pub(super) enum Refused {
    /// The queue is full (and the caller does not wait).
    Full(AuditEvent),
    /// The writer has stopped (it panicked): nothing will be written any more.
    WriterGone(AuditEvent),
}

/// What [`Queue::take`] found.
pub(super) enum Taken {
    /// Messages (at least one).
    Messages,
    /// Nothing within the tick.
    Idle,
    /// Closed, and everything taken.
    Closed,
}

/// The bounded queue: see the [module documentation](self).
pub(super) struct Queue {
    state: Mutex<State>,
    /// Signalled when a message arrives while the writer sleeps, and when the queue closes.
    arrived: Condvar,
    /// Signalled when the writer took records while recording threads wait for room, and
    /// when the writer stops.
    room: Condvar,
    /// How many records the queue holds at most (flushes are not counted).
    capacity: usize,
}

/// What the writer does, as far as recording threads care.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Writing (or about to take): no need to signal it.
    Busy,
    /// Waiting for a message in an empty queue: signal it.
    Sleeping,
    /// Waiting a little for more records (see [`Queue::take`]): signal it once a batch is
    /// ready.
    Lingering,
}

struct State {
    messages: VecDeque<Message>,
    /// Records in `messages`.
    records: usize,
    /// What the writer does.
    writer: Writer,
    /// Recording threads that wait for room.
    recorders_waiting: usize,
    /// Flushes in `messages`.
    flushes: usize,
    /// No more messages will come ([`Queue::close`]).
    closed: bool,
    /// The writer has stopped ([`Queue::writer_stopped`]).
    writer_gone: bool,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                messages: VecDeque::new(),
                records: 0,
                writer: Writer::Busy,
                recorders_waiting: 0,
                flushes: 0,
                closed: false,
                writer_gone: false,
            }),
            arrived: Condvar::new(),
            room: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// The state, even if a thread panicked while holding it: every update leaves it whole.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `event`; when the queue is full, waits for room if `wait`, and gives it back
    /// otherwise.
    #[allow(
        clippy::result_large_err,
        reason = "the event comes back by value, as it went in: no allocation"
    )]
    pub(super) fn push(&self, event: AuditEvent, wait: bool) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.records >= self.capacity && !state.writer_gone {
            if !wait {
                return Err(Refused::Full(event));
            }
            state.recorders_waiting += 1;
            if state.writer == Writer::Lingering {
                // Take now: someone waits for room.
                state.writer = Writer::Busy;
                self.arrived.notify_one();
            }
            while state.records >= self.capacity && !state.writer_gone {
                state = self
                    .room
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.recorders_waiting -= 1;
        }
        if state.writer_gone {
            return Err(Refused::WriterGone(event));
        }
        state.messages.push_back(Message::Record(event));
        state.records += 1;
        self.wake_writer(state);
        Ok(())
    }

    /// Adds a flush, whether the queue is full or not; `false` if the writer is gone.
    pub(super) fn push_flush(&self, done: SyncSender<()>) -> bool {
        let mut state = self.lock();
        if state.writer_gone {
            return false;
        }
        state.messages.push_back(Message::Flush(done));
        state.flushes += 1;
        self.wake_writer(state);
        true
    }

    /// Signals the writer if it sleeps on an empty queue (once: the flag is cleared), or
    /// if it lingers and a batch is now ready.
    fn wake_writer(&self, mut state: MutexGuard<'_, State>) {
        let wake = match state.writer {
            Writer::Sleeping => true,
            Writer::Lingering => self.batch_ready(&state),
            Writer::Busy => false,
        };
        if wake {
            state.writer = Writer::Busy;
        }
        drop(state);
        if wake {
            self.arrived.notify_one();
        }
    }

    /// Whether the writer should take now rather than linger: the queue is closing, holds
    /// a flush, a whole batch, or all it can hold.
    fn batch_ready(&self, state: &State) -> bool {
        state.closed
            || state.flushes > 0
            || state.records >= MAX_BATCH_RECORDS.min(self.capacity)
            || state.recorders_waiting > 0
    }

    /// No more messages: the writer takes what is left, then [`Taken::Closed`].
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        drop(state);
        self.arrived.notify_one();
    }

    /// The writer stops (it returned or panicked): waiting recording threads return, and
    /// what is left is dropped (so that flushes waiting for it return).
    pub(super) fn writer_stopped(&self) {
        let mut state = self.lock();
        state.writer_gone = true;
        let left = std::mem::take(&mut state.messages);
        state.records = 0;
        state.flushes = 0;
        drop(state);
        self.room.notify_all();
        drop(left);
    }

    /// For the writer: moves up to [`MAX_BATCH_RECORDS`] records (and the flushes among
    /// them) into `into`, in order, waiting at most `tick` for the first.
    ///
    /// With records but no full batch, it waits `linger` more before it takes (unless the
    /// queue closes, a flush comes, a batch fills or a recording thread waits for room
    /// meanwhile), so that the records that follow within that time go out in the same
    /// batch: one wake-up and one `write` for them all, where waking for each would cost
    /// more than the write.
    pub(super) fn take(
        &self,
        into: &mut VecDeque<Message>,
        tick: Duration,
        linger: Duration,
    ) -> Taken {
        let mut state = self.lock();
        while state.messages.is_empty() {
            if state.closed {
                return Taken::Closed;
            }
            state.writer = Writer::Sleeping;
            let (woken, wait) = self
                .arrived
                .wait_timeout(state, tick)
                .unwrap_or_else(PoisonError::into_inner);
            state = woken;
            state.writer = Writer::Busy;
            if wait.timed_out() && state.messages.is_empty() {
                return Taken::Idle;
            }
        }
        // Whether it slept or found records waiting (it was writing the last batch when
        // they came), a batch that is not ready waits for the records that follow.
        if !linger.is_zero() && !self.batch_ready(&state) {
            // Recording threads signal only once a batch is ready: a flush, a close, a
            // full batch, or a thread waiting for room ends the wait early.
            state.writer = Writer::Lingering;
            let deadline = std::time::Instant::now() + linger;
            loop {
                let now = std::time::Instant::now();
                if now >= deadline || self.batch_ready(&state) {
                    break;
                }
                state = self
                    .arrived
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.writer = Writer::Busy;
        }
        let taken = if state.records <= MAX_BATCH_RECORDS {
            std::mem::swap(&mut state.messages, into);
            state.flushes = 0;
            std::mem::take(&mut state.records)
        } else {
            let mut taken = 0;
            while taken < MAX_BATCH_RECORDS {
                let Some(message) = state.messages.pop_front() else {
                    break;
                };
                match message {
                    Message::Record(_) => taken += 1,
                    Message::Flush(_) => state.flushes -= 1,
                }
                into.push_back(message);
            }
            state.records -= taken;
            taken
        };
        let waiting = state.recorders_waiting > 0 && taken > 0;
        drop(state);
        if waiting {
            self.room.notify_all();
        }
        Taken::Messages
    }
}
