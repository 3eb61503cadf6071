"""An SMTP relay for Herald's tests, on aiosmtpd (Debian: python3-aiosmtpd).

With --cert and --key it offers STARTTLS and requires it (or, with --implicit-tls, speaks
TLS from the first byte); with --auth USER:PASSWORD it requires that login, over TLS.

It is not Herald's code: it speaks SMTP as a real relay does, and its answers depend on
the recipient's local part, so that a test can ask for a refusal:

  reject-...@  answers RCPT TO with 550 (a permanent failure),
  bye-...@     answers RCPT TO with 421 and closes the connection,
  busy-...@    answers RCPT TO with 451 the first time, then accepts (a transient one).

Every accepted message is appended to <dir>/received.jsonl as {"receivedAt", "pipelined",
"nextMailPipelined", "mailFrom", "rcptTos", "data", "headers", "parts"}: when it was
accepted (seconds since the epoch), whether DATA came
with RCPT, and the next message's MAIL with this one's end marker; the raw message, and
what Python's own email parser reads in it (every header, decoded; each MIME part's type
and decoded body). Prints "listening on <port>" once it accepts connections,
and runs until its standard input closes.

It offers PIPELINING, as Postfix and the large providers do (aiosmtpd reads commands one at
a time from its stream, so a pipelined group is answered in order); --no-pipelining leaves
it out, so that a test can see the client wait for each reply. --idle-timeout SECONDS
closes connections idle that long.
"""

import argparse
import asyncio
import json
import os
import socket
import ssl
import time
import warnings
import sys
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Relay:
    def __init__(self, directory, pipelining):
        self.path = os.path.join(directory, "received.jsonl")
        self.refused_once = set()
        self.pipelining = pipelining

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # A client that pipelines has sent DATA with RCPT: it is already in the buffer.
        unread = bytes(getattr(server._reader, "_buffer", b""))
        envelope.pipelined = unread.upper().startswith(b"DATA")
        local = address.split("@", 1)[0]
        if local.startswith("bye-"):
            # Refuses and hangs up, as a relay shutting down does (RFC 5321 3.8).
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.3.2 Service shutting down, closing transmission channel"
        if local.startswith("reject-"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("busy-") and address not in self.refused_once:
            self.refused_once.add(address)
            return "451 4.3.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        # A client that pipelines across messages sent the next message's MAIL in the same
        # write as this content's end marker: it is already in the buffer.
        unread = bytes(getattr(server._reader, "_buffer", b""))
        next_mail_pipelined = unread.upper().startswith(b"MAIL")
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        headers = {}
        for name, value in message.items():
            headers.setdefault(name.lower(), []).append(str(value))
        parts = [
            {"contentType": part.get_content_type(), "body": part.get_content()}
            for part in message.walk()
            if not part.is_multipart()
        ]
        record = {
            "receivedAt": time.time(),
            "authUser": session.auth_data if session.authenticated else None,
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "pipelined": getattr(envelope, "pipelined", False),
            "nextMailPipelined": next_mail_pipelined,
            "mailFrom": envelope.mail_from,
            "rcptTos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", errors="replace"),
            "contentType": message.get_content_type(),
            "headers": headers,
            "parts": parts,
        }
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return "250 2.0.0 Ok: queued"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--auth")
    parser.add_argument("--no-pipelining", action="store_true")
    parser.add_argument("--idle-timeout", type=float)
    args = parser.parse_args()
    options = {}
    if args.idle_timeout:
        # Closes a connection idle this many seconds, without a word, as relays do.
        options["timeout"] = args.idle_timeout
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.implicit_tls:
            options["ssl_context"] = context
        else:
            options["tls_context"] = context
            options["require_starttls"] = True
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            return AuthResult(success=ok, auth_data=user if ok else None)

        options["authenticator"] = authenticate
        options["auth_required"] = True
        # aiosmtpd counts only STARTTLS as TLS for AUTH; an implicit-TLS connection is TLS
        # from the first byte, so AUTH may be offered at once.
        options["auth_require_tls"] = not args.implicit_tls
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    # aiosmtpd checks that it is up by connecting to its port, so it needs a real one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Relay(args.dir, not args.no_pipelining), hostname="127.0.0.1", port=port, **options)
    controller.start()
    print(f"listening on {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
