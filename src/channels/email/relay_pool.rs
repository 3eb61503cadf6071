//! The open sessions with one relay. Messages wait in one queue; each session is a task
//! that takes them in turn, so that when a relay pipelines, a message's content and end
//! marker go in the same write as the next waiting message's MAIL, RCPT and DATA (RFC 2920
//! allows the content as the first command of a group): one write and one round trip a
//! message while messages wait, instead of two.
//!
//! Sessions open as messages wait and none is free, up to the pool's size, and close after
//! [`IDLE_FOR`] without work. A message whose session broke before its content went is put
//! back once for another session: the relay cannot have taken it. One whose content went
//! but whose reply never came is answered with the broken connection, since the relay may
//! have taken it.
//!
//! Each message carries the span of the send that queued it (the worker's, with the event
//! id), and what the relay made of it is logged there; a session task runs in a span of
//! its own, a child of the send that opened it, where connects and closes are logged.

use super::session::{Mail, Reply, Session, SessionError};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tracing::Instrument;

/// How long a session may wait for work before it is closed: relays drop idle clients
/// after a few minutes.
const IDLE_FOR: Duration = Duration::from_secs(30);

/// Opens a new session with the pool's relay: TCP, TLS and login.
pub trait Connect: Send + Sync + 'static {
    /// A greeted session, ready for mail.
    fn connect(&self) -> impl Future<Output = Result<Session, SessionError>> + Send;
}

/// A message waiting for a session, with where its answer goes.
struct Job {
    mail: Mail,
    answer: oneshot::Sender<Result<Reply, SessionError>>,
    /// Put back once already, after its session broke before its content went.
    put_back: bool,
    /// The span of the send that queued it.
    span: tracing::Span,
}

impl Job {
    fn answer(self, result: Result<Reply, SessionError>) {
        self.span.in_scope(|| match &result {
            Ok(reply) => tracing::debug!(%reply, "the relay took the message"),
            Err(SessionError::Refused(reply)) => {
                tracing::info!(%reply, "the relay refused the message")
            }
            Err(e) => tracing::warn!(error = %e, "the message did not reach the relay"),
        });
        // The sender may have stopped waiting (its handler timed out): nothing to tell.
        let _ = self.answer.send(result);
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Session tasks running, connected or connecting.
    sessions: usize,
    /// Of those, the ones waiting for a message.
    waiting: usize,
}

/// The sessions with one relay, and the messages waiting for them.
pub struct RelayPool<C> {
    connector: C,
    /// The most sessions open at once.
    size: usize,
    queue: Mutex<Queue>,
    work: Notify,
}

impl<C: Connect> RelayPool<C> {
    /// A pool of up to `size` sessions opened by `connector`.
    pub fn new(connector: C, size: usize) -> Arc<Self> {
        Arc::new(RelayPool {
            connector,
            size: size.max(1),
            queue: Mutex::new(Queue::default()),
            work: Notify::new(),
        })
    }

    /// Sends `mail` over one of the pool's sessions; answers the relay's reply to it.
    pub async fn send(self: &Arc<Self>, mail: Mail) -> Result<Reply, SessionError> {
        let (answer, answered) = oneshot::channel();
        self.put(
            Job {
                mail,
                answer,
                put_back: false,
                span: tracing::Span::current(),
            },
            false,
        );
        answered.await.unwrap_or_else(|_| {
            Err(SessionError::Connection(
                "the session ended without an answer".into(),
            ))
        })
    }

    /// Queues `job` (first in line when `front`), opening a session for it when none waits.
    fn put(self: &Arc<Self>, job: Job, front: bool) {
        let session_span = tracing::debug_span!(parent: &job.span, "smtp_session");
        let open_one = {
            let mut queue = self.queue.lock().expect("never poisoned");
            if front {
                queue.jobs.push_front(job);
            } else {
                queue.jobs.push_back(job);
            }
            let open_one = queue.waiting == 0 && queue.sessions < self.size;
            if open_one {
                queue.sessions += 1;
            }
            open_one
        };
        if open_one {
            tokio::spawn(self.clone().run_session().instrument(session_span));
        } else {
            self.work.notify_one();
        }
    }

    /// The next message whose sender still waits, if one is queued.
    fn try_take(&self) -> Option<Job> {
        next_job(&mut self.queue.lock().expect("never poisoned"))
    }

    /// The next message, waiting up to [`IDLE_FOR`] for one.
    async fn take(&self) -> Option<Job> {
        let deadline = tokio::time::Instant::now() + IDLE_FOR;
        loop {
            let notified = self.work.notified();
            tokio::pin!(notified);
            // Registered before looking, so that a message queued in between wakes it.
            notified.as_mut().enable();
            {
                // Looked at and counted as waiting under one lock, so that a message queued
                // meanwhile does not open a session for want of a waiting one.
                let mut queue = self.queue.lock().expect("never poisoned");
                if let Some(job) = next_job(&mut queue) {
                    return Some(job);
                }
                queue.waiting += 1;
            }
            let woken = tokio::time::timeout_at(deadline, notified).await;
            self.queue.lock().expect("never poisoned").waiting -= 1;
            if woken.is_err() {
                return self.try_take();
            }
        }
    }

    /// A session task: connects for the first message, carries messages until the session
    /// breaks or idles, and connects again while messages wait.
    async fn run_session(self: Arc<Self>) {
        loop {
            if let Some(first) = self.take().await {
                match self.connector.connect().await {
                    Ok(mut session) => {
                        tracing::debug!(pipelining = session.pipelines(), "connected to the relay");
                        self.carry(&mut session, first).await;
                        tracing::debug!("session with the relay over");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "connecting to the relay failed");
                        first.answer(Err(e));
                    }
                }
            }
            let mut queue = self.queue.lock().expect("never poisoned");
            if queue.jobs.is_empty() {
                queue.sessions -= 1;
                return;
            }
        }
    }

    /// Carries `first`, then every message the queue has, over `session`; returns when the
    /// session broke or had no work for [`IDLE_FOR`].
    async fn carry(self: &Arc<Self>, session: &mut Session, first: Job) {
        let mut job = first;
        // Whether `job`'s envelope went with the content before it.
        let mut envelope_sent = false;
        loop {
            let opened = if !session.pipelines() {
                session.envelope_in_lockstep(&job.mail).await
            } else if envelope_sent {
                session.envelope_replies().await
            } else {
                async {
                    session.queue_envelope(&job.mail)?;
                    session.flush().await?;
                    session.envelope_replies().await
                }
                .await
            };
            match opened {
                Ok(()) => {}
                Err(e @ SessionError::Connection(_)) => return self.put_back_or_fail(job, e),
                // Refused, or a message this relay cannot take: the session goes on.
                Err(e) => {
                    job.answer(Err(e));
                    if !session.in_step() {
                        return;
                    }
                    let Some(next) = self.take().await else {
                        return;
                    };
                    (job, envelope_sent) = (next, false);
                    continue;
                }
            }
            session.queue_content(&job.mail.content);
            let next = if session.pipelines() {
                self.try_take()
                    .and_then(|next| match session.queue_envelope(&next.mail) {
                        Ok(()) => Some(next),
                        Err(unsendable) => {
                            next.answer(Err(unsendable));
                            None
                        }
                    })
            } else {
                None
            };
            let reply = async {
                session.flush().await?;
                session.content_reply().await
            }
            .await;
            if let Err(e @ SessionError::Connection(_)) = &reply {
                // The next message's content had not gone: another session can carry it.
                if let Some(next) = next {
                    self.put_back_or_fail(next, e.clone());
                }
                job.answer(reply);
                return;
            }
            job.answer(reply);
            (job, envelope_sent) = match next {
                Some(next) => (next, true),
                None => match self.take().await {
                    Some(next) => (next, false),
                    None => return,
                },
            };
        }
    }

    /// A message whose session broke before its content went: back to the front of the
    /// queue for another session, once; the second time, answered with `error`.
    fn put_back_or_fail(self: &Arc<Self>, mut job: Job, error: SessionError) {
        if job.put_back {
            job.answer(Err(error));
        } else {
            job.span.in_scope(|| {
                tracing::info!(error = %error, "the session broke before the content went; another session carries the message")
            });
            job.put_back = true;
            self.put(job, true);
        }
    }
}

/// The first queued message whose sender still waits; those whose sender stopped waiting
/// (its handler timed out) are dropped unsent, so that a later retry does not repeat them.
fn next_job(queue: &mut Queue) -> Option<Job> {
    while let Some(job) = queue.jobs.pop_front() {
        if !job.answer.is_closed() {
            return Some(job);
        }
    }
    None
}
