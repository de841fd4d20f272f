//! The shutdown signal shared by every long-running loop.
//!
//! A [`Shutdown`] is a cheap clonable handle over a `watch` channel: `trigger` flips it once and
//! every `wait` returns. Library loops take one as an argument, so tests can stop them without
//! sending signals; binaries connect it to SIGTERM/SIGINT with [`Shutdown::on_signals`].

use tokio::sync::watch;

/// A one-way latch: once triggered, stays triggered.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: std::sync::Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A latch that has not fired.
    #[must_use]
    pub fn new() -> Self {
        let (sender, receiver) = watch::channel(false);
        Self {
            sender: std::sync::Arc::new(sender),
            receiver,
        }
    }

    /// Fires the latch. Idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether the latch has fired.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once the latch fires (immediately if it already has).
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        // An error means every sender is gone, which cannot happen while `self` holds one.
        let _ = receiver.wait_for(|fired| *fired).await;
    }

    /// Fires the latch on the first SIGTERM or SIGINT, from a background task.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let latch = self.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown requested");
            latch.trigger();
        });
        Ok(())
    }
}
