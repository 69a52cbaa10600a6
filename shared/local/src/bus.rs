//! The in-process event bus of the embedded default.
//!
//! Delivery is at least once, like EventBridge: a message is handed to the consumer loop as soon
//! as it is published, and anything lost with the process (a crash before the consumer ran)
//! is recovered from the runtime document's outbox and the sweeper, never from the bus itself.

use async_trait::async_trait;
use penstock_app::ports::{BusError, Envelope, EventBus};
use tokio::sync::mpsc;

/// Publishes into an unbounded channel that the runtime's consumer loop drains.
pub struct LocalBus {
    sender: mpsc::UnboundedSender<Envelope>,
}

impl LocalBus {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Envelope>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender }, receiver)
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        let total = envelopes.len();
        for (sent, envelope) in envelopes.into_iter().enumerate() {
            if self.sender.send(envelope).is_err() {
                return Err(BusError::Partial {
                    failed: total - sent,
                    total,
                    reason: "the runtime's consumer loop has stopped".into(),
                });
            }
        }
        Ok(())
    }
}

/// The bus of a process that only changes state (`penstock approve`, `penstock stop`...) while
/// a runner elsewhere executes: publishing always fails, so effects stay in the outbox, where
/// the runner's sweeper finds and publishes them.
pub struct DetachedBus;

#[async_trait]
impl EventBus for DetachedBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        Err(BusError::Unavailable(format!(
            "no runner in this process; {} message(s) left for the running penstock",
            envelopes.len()
        )))
    }
}
