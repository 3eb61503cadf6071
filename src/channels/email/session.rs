//! One SMTP session with a relay (RFC 5321): the greeting, EHLO, STARTTLS (RFC 3207), AUTH
//! PLAIN or LOGIN (RFC 4954), then one mail transaction per message, in steps that
//! [`super::relay_pool`] strings together.
//!
//! Herald speaks SMTP itself rather than through lettre's client because lettre has no
//! PIPELINING (RFC 2920): it waits for each reply before the next command, so a message
//! costs four round trips and five writes. Here, when the relay offers PIPELINING (Postfix,
//! Exim and the large providers do), commands are put in an output buffer and written
//! together: MAIL, RCPT and DATA in one group, and a message's content with its end marker
//! in the same write as the next message's MAIL, RCPT and DATA. Without PIPELINING each
//! command waits for its reply, as RFC 5321 says.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// A byte stream to a relay: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Longest reply line taken (RFC 5321 allows 512 octets; some relays write more).
const MAX_LINE: usize = 4096;
/// Most lines one reply may have: an EHLO reply lists a few dozen extensions at most.
const MAX_LINES: usize = 128;

/// A relay's reply: its code and its text, lines joined by spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text after the code.
    pub text: String,
}

impl Reply {
    /// 2xx and 3xx: the command was taken.
    fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 5xx: refused for good.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Why a command or a message did not go through.
#[derive(Debug, Clone)]
pub enum SessionError {
    /// The relay answered with a refusal.
    Refused(Reply),
    /// The relay cannot take this message at all (8-bit content without 8BITMIME, say).
    Unsendable(String),
    /// The connection broke, the relay spoke something that is not SMTP, or it lacks what
    /// the settings need (STARTTLS, a login mechanism): all may pass, or be fixed.
    Connection(String),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Refused(reply) => write!(f, "the relay refused: {reply}"),
            SessionError::Unsendable(why) => f.write_str(why),
            SessionError::Connection(why) => write!(f, "the connection to the relay: {why}"),
        }
    }
}

fn connection(context: &str, e: impl fmt::Display) -> SessionError {
    SessionError::Connection(format!("{context}: {e}"))
}

/// The ESMTP extensions a relay offered in its EHLO reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Extensions {
    pipelining: bool,
    starttls: bool,
    /// Content may be 8-bit (RFC 6152).
    eight_bit_mime: bool,
    /// Addresses may be UTF-8 (RFC 6531).
    smtp_utf8: bool,
    /// The AUTH mechanisms, upper case.
    auth: Vec<String>,
}

impl Extensions {
    /// Reads the EHLO reply's lines after the first (which greets).
    fn parse(reply_lines: &[String]) -> Self {
        let mut extensions = Extensions::default();
        for line in reply_lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => extensions.pipelining = true,
                "STARTTLS" => extensions.starttls = true,
                "8BITMIME" => extensions.eight_bit_mime = true,
                "SMTPUTF8" => extensions.smtp_utf8 = true,
                "AUTH" => extensions
                    .auth
                    .extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        extensions
    }
}

/// One message for a session: its envelope's two addresses and its content.
pub struct Mail {
    /// The envelope sender.
    pub from: String,
    /// The one envelope recipient.
    pub to: String,
    /// The whole message, headers and body, with CRLF line ends.
    pub content: Vec<u8>,
}

/// An open SMTP session, greeted and ready for mail.
pub struct Session {
    stream: BufReader<Box<dyn Stream>>,
    /// What goes to the relay with the next write.
    out: Vec<u8>,
    extensions: Extensions,
    /// The name this side gives in EHLO.
    hello: String,
    /// How long the relay may take to take a write or to answer.
    timeout: Duration,
    /// Whether the session can carry another message: false once cleaning up after a
    /// refusal failed (a relay that refuses and hangs up, say).
    in_step: bool,
}

impl Session {
    /// Reads the relay's greeting on `stream` and introduces this side as `hello`; the
    /// relay then gets `timeout` for each write and reply.
    pub async fn open(
        stream: Box<dyn Stream>,
        hello: &str,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let mut session = Session {
            stream: BufReader::new(stream),
            out: Vec::with_capacity(4096),
            extensions: Extensions::default(),
            hello: hello.to_owned(),
            timeout,
            in_step: true,
        };
        session.expect_positive().await?;
        session.ehlo().await?;
        Ok(session)
    }

    async fn ehlo(&mut self) -> Result<(), SessionError> {
        self.out
            .extend_from_slice(format!("EHLO {}\r\n", self.hello).as_bytes());
        self.flush().await?;
        let (reply, lines) = self.read_reply().await?;
        if !reply.is_positive() {
            return Err(SessionError::Refused(reply));
        }
        self.extensions = Extensions::parse(&lines);
        Ok(())
    }

    /// Upgrades the session to TLS with `upgrade`, which gets the plain stream and answers
    /// the encrypted one, then greets again: what was learnt before TLS is forgotten.
    pub async fn starttls<F, Fut>(mut self, upgrade: F) -> Result<Self, SessionError>
    where
        F: FnOnce(Box<dyn Stream>) -> Fut,
        Fut: Future<Output = Result<Box<dyn Stream>, SessionError>>,
    {
        if !self.extensions.starttls {
            return Err(SessionError::Connection(
                "the relay does not offer STARTTLS, which the settings require".into(),
            ));
        }
        self.command("STARTTLS\r\n").await?;
        // Anything the relay sent after its 220 and before the handshake would be taken
        // as said over TLS: refuse it (the STARTTLS command injection of CVE-2011-0411).
        if !self.stream.buffer().is_empty() {
            return Err(SessionError::Connection(
                "the relay sent data before the TLS handshake".into(),
            ));
        }
        let plain = self.stream.into_inner();
        let mut session = Session {
            stream: BufReader::new(upgrade(plain).await?),
            out: self.out,
            extensions: Extensions::default(),
            hello: self.hello,
            timeout: self.timeout,
            in_step: true,
        };
        session.ehlo().await?;
        Ok(session)
    }

    /// Logs in with PLAIN when offered, else LOGIN.
    pub async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), SessionError> {
        let offered = |m: &str| self.extensions.auth.iter().any(|a| a == m);
        if offered("PLAIN") {
            let token = BASE64.encode(format!("\0{user}\0{password}"));
            self.command(&format!("AUTH PLAIN {token}\r\n")).await?;
        } else if offered("LOGIN") {
            self.command("AUTH LOGIN\r\n").await?;
            self.command(&format!("{}\r\n", BASE64.encode(user)))
                .await?;
            self.command(&format!("{}\r\n", BASE64.encode(password)))
                .await?;
        } else {
            return Err(SessionError::Connection(format!(
                "the relay offers no login Herald speaks (it offers: {})",
                self.extensions.auth.join(" ")
            )));
        }
        Ok(())
    }

    /// Whether the relay takes commands in groups (RFC 2920).
    pub fn pipelines(&self) -> bool {
        self.extensions.pipelining
    }

    /// The MAIL, RCPT and DATA commands of `mail`, or why this relay cannot take it.
    fn envelope_commands(&self, mail: &Mail) -> Result<[String; 3], SessionError> {
        let mut parameters = String::new();
        if !mail.content.is_ascii() {
            if !self.extensions.eight_bit_mime {
                return Err(SessionError::Unsendable(
                    "the message has 8-bit content and the relay does not offer 8BITMIME".into(),
                ));
            }
            parameters.push_str(" BODY=8BITMIME");
        }
        if !mail.from.is_ascii() || !mail.to.is_ascii() {
            if !self.extensions.smtp_utf8 {
                return Err(SessionError::Unsendable(
                    "an address is not ASCII and the relay does not offer SMTPUTF8".into(),
                ));
            }
            parameters.push_str(" SMTPUTF8");
        }
        Ok([
            format!("MAIL FROM:<{}>{parameters}\r\n", mail.from),
            format!("RCPT TO:<{}>\r\n", mail.to),
            "DATA\r\n".to_owned(),
        ])
    }

    /// Puts `mail`'s MAIL, RCPT and DATA in the output, to go with the next write; a relay
    /// that pipelines only. Nothing is put when the relay cannot take the message.
    pub fn queue_envelope(&mut self, mail: &Mail) -> Result<(), SessionError> {
        debug_assert!(self.pipelines());
        for command in self.envelope_commands(mail)? {
            self.out.extend_from_slice(command.as_bytes());
        }
        Ok(())
    }

    /// Reads the replies to an envelope put with [`Session::queue_envelope`] and written.
    /// Answers `Ok` when the relay waits for the content; after a refusal the transaction
    /// is reset, so that the session can carry the next message.
    pub async fn envelope_replies(&mut self) -> Result<(), SessionError> {
        let mut replies: Vec<Reply> = Vec::with_capacity(3);
        // Every pipelined command is answered, refused or not: read them all so that the
        // session stays in step.
        for _ in 0..3 {
            match self.read_reply().await {
                Ok((reply, _)) => replies.push(reply),
                // A relay that refused and hung up (a 421) has said what matters.
                Err(e) => match replies.iter().find(|r| !r.is_positive()) {
                    Some(refusal) => {
                        self.in_step = false;
                        return Err(SessionError::Refused(refusal.clone()));
                    }
                    None => return Err(e),
                },
            }
        }
        self.settle_envelope(replies).await
    }

    /// Sends `mail`'s MAIL, RCPT and DATA one at a time, each after the reply to the one
    /// before: for a relay that does not pipeline. Answers as [`Session::envelope_replies`].
    pub async fn envelope_in_lockstep(&mut self, mail: &Mail) -> Result<(), SessionError> {
        let mut replies = Vec::with_capacity(3);
        for command in self.envelope_commands(mail)? {
            self.out.extend_from_slice(command.as_bytes());
            self.flush().await?;
            let reply = self.read_reply().await?.0;
            let taken = reply.is_positive();
            replies.push(reply);
            if !taken {
                break;
            }
        }
        self.settle_envelope(replies).await
    }

    /// `Ok` when the replies to MAIL, RCPT and DATA are all positive, the last a 354;
    /// else the refusal, after cleaning up.
    async fn settle_envelope(&mut self, replies: Vec<Reply>) -> Result<(), SessionError> {
        let data_taken = replies.get(2).is_some_and(|r| r.code == 354);
        if let Some(refusal) = replies.iter().find(|r| !r.is_positive()).cloned() {
            // The refusal is the answer even when the cleanup fails; the session then
            // goes rather than on to the next message.
            self.in_step = self.clean_up(data_taken).await.is_ok();
            return Err(SessionError::Refused(refusal));
        }
        if !data_taken {
            let reply = replies.last().cloned().expect("DATA was answered");
            return Err(connection("DATA", format!("unexpected reply {reply}")));
        }
        Ok(())
    }

    /// Puts `content` in the output, with its end marker.
    pub fn queue_content(&mut self, content: &[u8]) {
        put_with_end_marker(content, &mut self.out);
    }

    /// Reads the relay's reply to a content put with [`Session::queue_content`] and
    /// written: whether it took the message.
    pub async fn content_reply(&mut self) -> Result<Reply, SessionError> {
        let reply = self.read_reply().await?.0;
        if reply.is_positive() {
            Ok(reply)
        } else {
            Err(SessionError::Refused(reply))
        }
    }

    /// Whether the session can carry another message.
    pub fn in_step(&self) -> bool {
        self.in_step
    }

    /// Forgets a refused transaction, so that the session can carry the next one.
    async fn clean_up(&mut self, data_taken: bool) -> Result<(), SessionError> {
        if data_taken {
            // A relay that took DATA after refusing the recipient wants content: end an
            // empty one, which it will drop for want of a recipient.
            self.out.extend_from_slice(b".\r\n");
            self.flush().await?;
            self.read_reply().await?;
        }
        self.command("RSET\r\n").await.map(drop)
    }

    /// Sends one command and wants a positive reply.
    async fn command(&mut self, line: &str) -> Result<Reply, SessionError> {
        self.out.extend_from_slice(line.as_bytes());
        self.flush().await?;
        self.expect_positive().await
    }

    async fn expect_positive(&mut self) -> Result<Reply, SessionError> {
        let (reply, _) = self.read_reply().await?;
        if reply.is_positive() {
            Ok(reply)
        } else {
            Err(SessionError::Refused(reply))
        }
    }

    /// Writes what is in the output, in one write when the stream takes it all.
    pub async fn flush(&mut self) -> Result<(), SessionError> {
        let stream = self.stream.get_mut();
        let written = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        let result = match tokio::time::timeout(self.timeout, written).await {
            Ok(written) => written.map_err(|e| connection("writing to the relay", e)),
            Err(_) => Err(self.too_slow()),
        };
        self.out.clear();
        result
    }

    fn too_slow(&self) -> SessionError {
        SessionError::Connection(format!(
            "the relay did not answer within {:?}",
            self.timeout
        ))
    }

    /// Reads one reply, multi-line or not; answers it and the text of each of its lines.
    async fn read_reply(&mut self) -> Result<(Reply, Vec<String>), SessionError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.read_reply_now()).await {
            Ok(read) => read,
            Err(_) => Err(self.too_slow()),
        }
    }

    async fn read_reply_now(&mut self) -> Result<(Reply, Vec<String>), SessionError> {
        let mut lines = Vec::new();
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            let read = (&mut self.stream)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| connection("reading from the relay", e))?;
            if read == 0 {
                return Err(SessionError::Connection(
                    "the relay closed the connection".into(),
                ));
            }
            if line.last() != Some(&b'\n') {
                return Err(SessionError::Connection(format!(
                    "the relay's reply line was cut off (closed, or over {MAX_LINE} bytes)"
                )));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let (code, last, rest) = parse_line(text).ok_or_else(|| {
                SessionError::Connection(format!("the relay's reply is not SMTP: {text:?}"))
            })?;
            lines.push(rest.to_owned());
            if last {
                let reply = Reply {
                    code,
                    text: lines.join(" "),
                };
                return Ok((reply, lines));
            }
            if lines.len() >= MAX_LINES {
                return Err(SessionError::Connection(
                    "the relay's reply has too many lines".into(),
                ));
            }
        }
    }
}

/// Reads a reply line `250-text` or `250 text` (or a bare `250`): its code, whether it is the
/// reply's last line, and its text.
fn parse_line(line: &str) -> Option<(u16, bool, &str)> {
    let code = line.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with('0') {
        return None;
    }
    let code = code.parse().ok()?;
    match line.as_bytes().get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

/// Puts `content` in `out` as it goes after DATA: a line that starts with a dot gets
/// another (RFC 5321 4.5.2), the last line is ended, and the end marker follows.
fn put_with_end_marker(content: &[u8], out: &mut Vec<u8>) {
    out.reserve(content.len() + 64);
    let mut line_start = true;
    let mut rest = content;
    while !rest.is_empty() {
        if line_start && rest[0] == b'.' {
            out.push(b'.');
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                out.extend_from_slice(&rest[..=end]);
                rest = &rest[end + 1..];
                line_start = true;
            }
            None => {
                out.extend_from_slice(rest);
                rest = &[];
                line_start = false;
            }
        }
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_end_marker(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_with_end_marker(content, &mut out);
        out
    }

    #[test]
    fn lines_starting_with_a_dot_are_stuffed_and_the_content_ends_with_the_marker() {
        assert_eq!(
            with_end_marker(b"a\r\n.b\r\n..\r\n"),
            b"a\r\n..b\r\n...\r\n.\r\n"
        );
        assert_eq!(with_end_marker(b".first"), b"..first\r\n.\r\n");
        assert_eq!(with_end_marker(b""), b".\r\n");
        assert_eq!(with_end_marker(b"x. y\r\n"), b"x. y\r\n.\r\n");
    }

    #[test]
    fn reply_lines_are_read_with_their_code_and_continuation() {
        assert_eq!(
            parse_line("250-PIPELINING"),
            Some((250, false, "PIPELINING"))
        );
        assert_eq!(
            parse_line("550 5.1.1 unknown"),
            Some((550, true, "5.1.1 unknown"))
        );
        assert_eq!(parse_line("354"), Some((354, true, "")));
        assert_eq!(parse_line("25x ok"), None);
        assert_eq!(parse_line("2500"), None);
        assert_eq!(parse_line("hi"), None);
    }

    #[test]
    fn extensions_are_read_from_the_ehlo_reply() {
        let lines: Vec<String> = [
            "relay.example greets you",
            "pipelining",
            "AUTH plain LOGIN",
            "8BITMIME",
            "SIZE 10240000",
        ]
        .map(String::from)
        .to_vec();
        let extensions = Extensions::parse(&lines);
        assert!(extensions.pipelining && extensions.eight_bit_mime);
        assert!(!extensions.starttls && !extensions.smtp_utf8);
        assert_eq!(extensions.auth, ["PLAIN", "LOGIN"]);
    }
}
