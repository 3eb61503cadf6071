//! The push outbox: one JSON line per device push, for running without APNs or FCM.

use crate::domain::{Envelope, PushNotification};
use crate::store::Device;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Appends pushes to a JSON-lines file.
pub struct PushOutbox {
    path: PathBuf,
    /// One writer at a time, so that lines never interleave.
    writing: tokio::sync::Mutex<()>,
}

impl PushOutbox {
    /// An outbox appending to `path`.
    pub fn new(path: PathBuf) -> Self {
        PushOutbox {
            path,
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Appends the push of `envelope` to `device`.
    pub async fn write(
        &self,
        envelope: &Envelope,
        push: &PushNotification,
        device: &Device,
    ) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&serde_json::json!({
            "id": envelope.id,
            "tenantId": push.tenant_id,
            "userId": device.user_id,
            "platform": device.platform,
            "token": device.token,
            "notification": push,
        }))
        .map_err(std::io::Error::other)?;
        line.push(b'\n');
        let _one_at_a_time = self.writing.lock().await;
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        file.write_all(&line).await?;
        file.flush().await
    }
}
