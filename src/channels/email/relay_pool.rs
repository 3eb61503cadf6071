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
        // A new session's span is a child of this message's send.
        let parent = job.span.id();
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
            let span = tracing::debug_span!(parent: parent, "smtp_session");
            tokio::spawn(self.clone().run_session().instrument(span));
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

#[cfg(test)]
mod tests {
    //! The pool over in-memory streams (`tokio::io::duplex`): the relay side of each
    //! connection is a script of what it says and what it must hear, so that every step of
    //! a session, and what the pool does when a relay refuses or hangs up, is checked
    //! without a socket. A relay that hears something else fails the test with what it
    //! heard.

    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
    use tokio::task::JoinHandle;

    /// One step of a scripted relay.
    enum Step {
        /// Writes a reply (lines joined by CRLF; the last CRLF is added).
        Say(&'static str),
        /// Reads one command line, which must be this one (without its CRLF).
        Hear(&'static str),
        /// Reads a message's content, up to its end marker.
        HearContent,
        /// Closes the connection.
        HangUp,
    }
    use Step::{HangUp, Hear, HearContent, Say};

    /// The greeting and EHLO of a relay that offers nothing.
    const LOCKSTEP: [Step; 3] = [
        Say("220 relay.test ESMTP"),
        Hear("EHLO herald.test"),
        Say("250 relay.test"),
    ];

    /// The greeting and EHLO of a relay that offers PIPELINING.
    const PIPELINING: [Step; 3] = [
        Say("220 relay.test ESMTP"),
        Hear("EHLO herald.test"),
        Say("250-relay.test\r\n250 PIPELINING"),
    ];

    /// A transaction for `ada@example.com` that a relay without PIPELINING takes.
    const TAKEN: [Step; 8] = [
        Hear("MAIL FROM:<herald@example.com>"),
        Say("250 2.1.0 ok"),
        Hear("RCPT TO:<ada@example.com>"),
        Say("250 2.1.5 ok"),
        Hear("DATA"),
        Say("354 go ahead"),
        HearContent,
        Say("250 2.0.0 queued"),
    ];

    /// A session's script: its greeting and EHLO, then `steps`.
    fn script(hello: [Step; 3], steps: impl IntoIterator<Item = Step>) -> Vec<Step> {
        hello.into_iter().chain(steps).collect()
    }

    /// Plays `script` on the relay side of `stream`; answers what it heard: each command,
    /// and each message's content as it went on the wire (without the end marker).
    async fn play(stream: DuplexStream, script: Vec<Step>) -> Vec<String> {
        let (read, mut write) = tokio::io::split(stream);
        let mut read = BufReader::new(read);
        let mut heard = Vec::new();
        let mut line = String::new();
        for step in script {
            match step {
                Say(reply) => write
                    .write_all(format!("{reply}\r\n").as_bytes())
                    .await
                    .expect("Herald's side is open"),
                Hear(command) => {
                    line.clear();
                    read.read_line(&mut line).await.unwrap();
                    assert_eq!(line.trim_end_matches("\r\n"), command, "after {heard:?}");
                    heard.push(command.to_owned());
                }
                HearContent => {
                    let mut content = String::new();
                    loop {
                        line.clear();
                        assert!(read.read_line(&mut line).await.unwrap() > 0, "{content:?}");
                        if line == ".\r\n" {
                            break;
                        }
                        content.push_str(&line);
                    }
                    heard.push(content);
                }
                HangUp => break,
            }
        }
        heard
    }

    /// Opens each session over an in-memory stream to the next scripted relay.
    struct ScriptedRelays {
        scripts: Mutex<VecDeque<Vec<Step>>>,
        playing: Mutex<Vec<JoinHandle<Vec<String>>>>,
    }

    impl ScriptedRelays {
        fn pool(scripts: Vec<Vec<Step>>) -> Arc<RelayPool<ScriptedRelays>> {
            let relays = ScriptedRelays {
                scripts: Mutex::new(scripts.into()),
                playing: Mutex::new(Vec::new()),
            };
            RelayPool::new(relays, 1)
        }
    }

    impl Connect for ScriptedRelays {
        async fn connect(&self) -> Result<Session, SessionError> {
            let script = self.scripts.lock().unwrap().pop_front();
            let script = script.ok_or_else(|| {
                SessionError::Connection("the test has no relay left to connect to".into())
            })?;
            let (herald, relay) = tokio::io::duplex(64 * 1024);
            self.playing
                .lock()
                .unwrap()
                .push(tokio::spawn(play(relay, script)));
            Session::open(Box::new(herald), "herald.test", Duration::from_secs(5)).await
        }
    }

    /// What each relay connected to heard, in order; fails the test with the first relay
    /// that heard something its script did not expect.
    async fn transcripts(pool: &RelayPool<ScriptedRelays>) -> Vec<Vec<String>> {
        let playing = std::mem::take(&mut *pool.connector.playing.lock().unwrap());
        let mut transcripts = Vec::new();
        for relay in playing {
            let heard = tokio::time::timeout(Duration::from_secs(10), relay)
                .await
                .expect("the relay's script ends");
            transcripts.push(heard.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
        }
        transcripts
    }

    /// A message from herald@example.com to ada@example.com with `content`.
    fn mail(content: &str) -> Mail {
        Mail {
            from: "herald@example.com".into(),
            to: "ada@example.com".into(),
            content: content.as_bytes().to_vec(),
        }
    }

    /// What a relay hears from EHLO on when it takes one message of each of `contents`.
    fn commands(contents: &[&str]) -> Vec<String> {
        let mut heard = vec!["EHLO herald.test".to_owned()];
        for content in contents {
            heard.extend(
                [
                    "MAIL FROM:<herald@example.com>",
                    "RCPT TO:<ada@example.com>",
                    "DATA",
                ]
                .map(String::from),
            );
            heard.push((*content).to_owned());
        }
        heard
    }

    #[tokio::test]
    async fn a_message_goes_through_the_greeting_ehlo_mail_rcpt_and_data() {
        let pool = ScriptedRelays::pool(vec![script(LOCKSTEP, TAKEN)]);
        let answer = pool.send(mail("Subject: hi\r\n\r\n.a dot\r\nbye")).await;
        // The content goes with its leading dot doubled and its last line ended.
        let transcripts = transcripts(&pool).await;
        assert_eq!(
            transcripts,
            [commands(&["Subject: hi\r\n\r\n..a dot\r\nbye\r\n"])]
        );
        let reply = answer.expect("the relay took it");
        assert_eq!((reply.code, reply.text.as_str()), (250, "2.0.0 queued"));
    }

    #[tokio::test]
    async fn one_connection_carries_message_after_message() {
        let pool = ScriptedRelays::pool(vec![script(LOCKSTEP, TAKEN.into_iter().chain(TAKEN))]);
        let first = pool.send(mail("first\r\n")).await;
        let second = pool.send(mail("second\r\n")).await;
        assert_eq!(
            transcripts(&pool).await,
            [commands(&["first\r\n", "second\r\n"])]
        );
        assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    }

    /// Sends a message to a relay that answers its RCPT with `refusal`, then another on
    /// the same connection, which the relay takes after the RSET; answers the refusal.
    async fn refused_at_rcpt(refusal: &'static str) -> Reply {
        let refused = [
            Hear("MAIL FROM:<herald@example.com>"),
            Say("250 2.1.0 ok"),
            Hear("RCPT TO:<ada@example.com>"),
            Say(refusal),
            Hear("RSET"),
            Say("250 2.0.0 flushed"),
        ];
        let pool = ScriptedRelays::pool(vec![script(LOCKSTEP, refused.into_iter().chain(TAKEN))]);
        let answer = pool.send(mail("refused\r\n")).await;
        let next = pool.send(mail("next\r\n")).await;
        // The refused transaction is reset, and the next goes on the same connection.
        let mut heard = commands(&[]);
        heard.extend(
            [
                "MAIL FROM:<herald@example.com>",
                "RCPT TO:<ada@example.com>",
                "RSET",
            ]
            .map(String::from),
        );
        heard.extend(commands(&["next\r\n"]).into_iter().skip(1));
        assert_eq!(transcripts(&pool).await, [heard]);
        assert!(next.is_ok(), "the connection carries the next: {next:?}");
        match answer {
            Err(SessionError::Refused(reply)) => reply,
            other => panic!("a refusal, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_4xx_at_rcpt_is_a_refusal_worth_a_retry_and_the_session_goes_on() {
        let reply = refused_at_rcpt("451 4.3.0 try again later").await;
        assert_eq!(reply.code, 451);
        assert!(!reply.is_permanent());
    }

    #[tokio::test]
    async fn a_5xx_at_rcpt_is_a_refusal_for_good_and_the_session_goes_on() {
        let reply = refused_at_rcpt("550 5.1.1 no such user").await;
        assert_eq!(reply.code, 550);
        assert!(reply.is_permanent());
    }

    #[tokio::test]
    async fn with_pipelining_a_messages_content_goes_with_the_next_envelope() {
        // The relay answers nothing until it has heard a whole group: a client that
        // waited for each reply would never be answered.
        let pipelined = [
            Hear("MAIL FROM:<herald@example.com>"),
            Hear("RCPT TO:<ada@example.com>"),
            Hear("DATA"),
            Say("250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead"),
            HearContent,
            Hear("MAIL FROM:<herald@example.com>"),
            Hear("RCPT TO:<ada@example.com>"),
            Hear("DATA"),
            Say("250 2.0.0 first queued\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead"),
            HearContent,
            Say("250 2.0.0 second queued"),
        ];
        let pool = ScriptedRelays::pool(vec![script(PIPELINING, pipelined)]);
        // Both wait before the session opens, so that the second is there to go along.
        let (first, second) =
            tokio::join!(pool.send(mail("first\r\n")), pool.send(mail("second\r\n")));
        assert_eq!(
            transcripts(&pool).await,
            [commands(&["first\r\n", "second\r\n"])]
        );
        assert_eq!(first.unwrap().text, "2.0.0 first queued");
        assert_eq!(second.unwrap().text, "2.0.0 second queued");
    }

    #[tokio::test]
    async fn a_relay_that_hangs_up_before_the_content_leaves_the_message_to_another_session() {
        let hangs_up = script(LOCKSTEP, [Hear("MAIL FROM:<herald@example.com>"), HangUp]);
        let pool = ScriptedRelays::pool(vec![hangs_up, script(LOCKSTEP, TAKEN)]);
        let answer = pool.send(mail("once\r\n")).await;
        let transcripts = transcripts(&pool).await;
        assert_eq!(transcripts.len(), 2, "a second connection: {transcripts:?}");
        assert_eq!(transcripts[1], commands(&["once\r\n"]));
        assert!(answer.is_ok(), "{answer:?}");
    }

    #[tokio::test]
    async fn a_message_is_put_back_once_only() {
        let hangs_up = || script(LOCKSTEP, [Hear("MAIL FROM:<herald@example.com>"), HangUp]);
        let pool = ScriptedRelays::pool(vec![hangs_up(), hangs_up()]);
        let answer = pool.send(mail("never\r\n")).await;
        assert_eq!(transcripts(&pool).await.len(), 2);
        assert!(
            matches!(answer, Err(SessionError::Connection(_))),
            "{answer:?}"
        );
    }

    #[tokio::test]
    async fn a_relay_that_hangs_up_after_the_content_answers_the_broken_connection() {
        // The relay may have taken the message: sending it again could deliver it twice.
        let mut taken_then_gone = script(LOCKSTEP, TAKEN);
        taken_then_gone.pop();
        taken_then_gone.push(HangUp);
        let pool = ScriptedRelays::pool(vec![taken_then_gone, script(LOCKSTEP, TAKEN)]);
        let answer = pool.send(mail("maybe\r\n")).await;
        let transcripts = transcripts(&pool).await;
        assert_eq!(
            transcripts,
            [commands(&["maybe\r\n"])],
            "no second connection"
        );
        assert!(
            matches!(answer, Err(SessionError::Connection(_))),
            "{answer:?}"
        );
    }
}
