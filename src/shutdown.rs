//! The shutdown signal: raised once, by SIGTERM, Ctrl-C or a test, and seen by every task.

use tokio::sync::watch;

/// A cloneable handle on the shutdown signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    raised: watch::Receiver<bool>,
    trigger: std::sync::Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// A signal that nothing has raised yet.
    pub fn new() -> Self {
        let (trigger, raised) = watch::channel(false);
        Shutdown {
            raised,
            trigger: std::sync::Arc::new(trigger),
        }
    }

    /// A signal raised by SIGTERM or Ctrl-C.
    pub fn on_signals() -> Self {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: no new work is taken, in-flight work drains");
            trigger.raise();
        });
        shutdown
    }

    /// Raises the signal.
    pub fn raise(&self) {
        self.trigger.send_replace(true);
    }

    /// Whether the signal is raised.
    pub fn is_raised(&self) -> bool {
        *self.raised.borrow()
    }

    /// Completes once the signal is raised.
    pub async fn raised(&self) {
        let mut raised = self.raised.clone();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = raised.wait_for(|up| *up).await;
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
