//! Group commit: callers hand their items to one writer task, which writes whatever has
//! piled up at once (one transaction, one fsync) and answers each caller with its own
//! item's outcome. A caller waits for its group's write, so nothing is answered before it
//! is written; with nothing piled up, an item is written alone and at once.
//!
//! What a group is written as is the owner's ([`GroupWrite`]): the audit chain, the chat
//! messages, the idempotency keys. This module only queues, groups and answers; it
//! imports nothing from the crate.

use std::future::Future;
use tokio::sync::{mpsc, oneshot};

/// How a group of items is written.
pub trait GroupWrite: Send + 'static {
    /// What a caller hands over, owned.
    type Item: Send + 'static;
    /// What each caller is answered when its group was written.
    type Outcome: Send + 'static;

    /// Writes `group` at once; answers each item's outcome in the order given, or why
    /// the group as a whole failed (every caller is told that).
    fn write(
        &mut self,
        group: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Result<Self::Outcome, String>>, String>> + Send;
}

/// An item, and who waits for its outcome.
type Waiting<W> = (
    <W as GroupWrite>::Item,
    oneshot::Sender<Result<<W as GroupWrite>::Outcome, String>>,
);

/// A handle on one writer task; cheap to clone. The task ends once every handle is gone.
pub struct Grouped<W: GroupWrite> {
    queue: mpsc::Sender<Waiting<W>>,
}

impl<W: GroupWrite> Clone for Grouped<W> {
    fn clone(&self) -> Self {
        Grouped {
            queue: self.queue.clone(),
        }
    }
}

impl<W: GroupWrite> Grouped<W> {
    /// Starts the writer task: groups of at most `most` items, and at most `queued` more
    /// waiting for their group (a caller past that waits to queue: memory stays bounded).
    pub fn start(writer: W, most: usize, queued: usize) -> Self {
        let (queue, waiting) = mpsc::channel(queued.max(1));
        tokio::spawn(run(writer, most.max(1), waiting));
        Grouped { queue }
    }

    /// Hands `item` to the writer and waits for its group to be written.
    pub async fn write(&self, item: W::Item) -> Result<W::Outcome, String> {
        let stopped = || "the group writer has stopped".to_owned();
        let (answer, outcome) = oneshot::channel();
        self.queue
            .send((item, answer))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run<W: GroupWrite>(mut writer: W, most: usize, mut queue: mpsc::Receiver<Waiting<W>>) {
    let mut group = Vec::with_capacity(most);
    while queue.recv_many(&mut group, most).await > 0 {
        let (items, waiting): (Vec<_>, Vec<_>) = group.drain(..).unzip();
        match writer.write(&items).await {
            Ok(outcomes) => {
                for (waiter, outcome) in waiting.into_iter().zip(outcomes) {
                    let _ = waiter.send(outcome);
                }
            }
            Err(e) => {
                for waiter in waiting {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the groups it was given; fails any group holding a zero.
    struct Recording(std::sync::Arc<std::sync::Mutex<Vec<Vec<u32>>>>);

    impl GroupWrite for Recording {
        type Item = u32;
        type Outcome = u32;

        async fn write(&mut self, group: &[u32]) -> Result<Vec<Result<u32, String>>, String> {
            self.0.lock().unwrap().push(group.to_vec());
            if group.contains(&0) {
                return Err("a zero".into());
            }
            Ok(group.iter().map(|n| Ok(n * 10)).collect())
        }
    }

    #[tokio::test]
    async fn each_caller_gets_its_own_outcome_and_a_failed_group_fails_all_of_it() {
        let groups = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Grouped::start(Recording(groups.clone()), 3, 16);
        let answers = futures_util::future::join_all((1..=5).map(|n| writer.write(n))).await;
        assert_eq!(answers, (1..=5).map(|n| Ok(n * 10)).collect::<Vec<_>>());
        assert!(
            groups.lock().unwrap().iter().all(|g| g.len() <= 3),
            "groups of at most 3"
        );
        let (zero, one) = tokio::join!(writer.write(0), writer.write(1));
        assert_eq!(zero, Err("a zero".to_owned()));
        // Written with the zero, or alone after it.
        assert!(one == Err("a zero".to_owned()) || one == Ok(10));
    }
}
