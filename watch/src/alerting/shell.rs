//! The daemon's side of direct delivery: an [`AlertBook`] and its [`Delivery`] thread, fed by
//! the receive loop.
//!
//! The loop calls [`AlertShell::handle_event`] for each tracker event (with the tracker's view
//! of the agent), [`AlertShell::handle_timeout`] when [`AlertShell::poll_timeout`] is due, and
//! [`AlertShell::flush`] after both: batches are handed to the delivery thread with
//! [`Delivery::try_send`], which never blocks (a full queue drops and counts the batch; the
//! next resend repairs it). Nothing here waits for the network.

use std::sync::Arc;
use std::time::SystemTime;

use super::{AgentFacts, AlertBook, AlertingConfig, Delivery, DeliveryCounters, Now};
use crate::tracker::{Event, Nanos};

/// Direct delivery as the loop runs it.
#[derive(Debug)]
pub struct AlertShell {
    book: AlertBook,
    delivery: Delivery,
    counters: Arc<DeliveryCounters>,
}

/// The time as the book takes it: `mono` on the tracker's clock, and the wall clock now.
#[must_use]
pub fn now(mono: Nanos) -> Now {
    Now {
        mono,
        wall: SystemTime::now(),
    }
}

impl AlertShell {
    /// Starts the delivery thread.
    ///
    /// # Errors
    /// Creating the thread or its runtime.
    pub fn start(cfg: AlertingConfig) -> std::io::Result<AlertShell> {
        let book = cfg.book();
        let delivery = Delivery::start(cfg)?;
        let counters = delivery.counters();
        Ok(AlertShell {
            book,
            delivery,
            counters,
        })
    }

    /// Takes one tracker event with what is known of its agent (name, severity, class labels).
    pub fn handle_event(&mut self, mono: Nanos, event: &Event, facts: &AgentFacts) {
        self.book.handle_event(now(mono), event, facts);
    }

    /// Re-sends active alerts if their interval has passed.
    pub fn handle_timeout(&mut self, mono: Nanos) {
        if self.book.poll_timeout().is_some_and(|t| t <= mono) {
            self.book.handle_timeout(now(mono));
        }
    }

    /// When [`AlertShell::handle_timeout`] wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.book.poll_timeout()
    }

    /// Hands what is due to the delivery thread, without blocking.
    pub fn flush(&mut self) {
        while let Some(batch) = self.book.poll_batch() {
            // A full queue drops (and counts) the batch: the next resend repairs it.
            let _ = self.delivery.try_send(batch);
        }
    }

    /// `varta_alerts_sent_total{outcome}`.
    #[must_use]
    pub fn outcomes(&self) -> [(&'static str, u64); 4] {
        self.counters.outcomes()
    }

    /// Active (firing) alerts.
    #[must_use]
    pub fn active(&self) -> usize {
        self.book.active()
    }

    /// Alerts refused because the book was full.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.book.refused()
    }
}
