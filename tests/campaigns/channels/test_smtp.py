"""Email over SMTP against a local aiosmtpd server: plain, STARTTLS (self-signed cert made here,
verified by the client), implicit TLS, AUTH, connection reuse and reconnect, reply codes, MIME
structure, RFC 8058 headers and a DKIM signature verified from the bytes the server received."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import hashlib
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from opencdp.campaigns.channels import ChannelConfigError, build_channel
from opencdp.campaigns.channels.base import NOT_SENT
from opencdp.campaigns.channels.dkim import relaxed_body, relaxed_header, split_message
from opencdp.campaigns.channels.mime import encode_words
from opencdp.campaigns.channels.smtp import SmtpChannel

from .support import message


@dataclass
class Recorder:
    """An SMTP handler that keeps what it received and refuses the recipients it is told to."""

    received: list[Envelope] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # address -> reply, e.g. "550 5.1.1 no such user"
    sessions: set[Any] = field(default_factory=set)  # client (host, port): one per connection
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(self, server: SMTPServer, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        self.sessions.add(session.peer)
        return "250 2.0.0 queued"

    def authenticate(self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"shop", b"s3cret")
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=ok, handled=False)

    def parsed(self, i: int = -1) -> EmailMessage:
        content = self.received[i].original_content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost, written as PEM (cert, key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield recorder, controller.port
    finally:
        controller.stop()


def plain(port: int, **extra: Any) -> SmtpChannel:
    channel = build_channel("email", {"host": "127.0.0.1", "port": port, "security": "none",
                                      "from": "news@shop.example", "from_name": "Home & Living", **extra})
    assert isinstance(channel, SmtpChannel)
    return channel


def test_multipart_message_headers_and_one_click_unsubscribe(smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    with plain(port, reply_to="help@shop.example") as channel:
        result = channel.send(message(
            "email", "anna@example.org", subject="Новая коллекция: sofas", text="Plain ✓ text",
            html="<p>HTML <b>✓</b></p>", list_unsubscribe="https://shop.example/u/abc", list_unsubscribe_post=True,
            headers={"X-Campaign": "c1"}))
    assert result.status == "sent" and result.provider_message_id == "<c1-s1-p1@shop.example>"
    envelope = recorder.received[0]
    assert envelope.mail_from == "news@shop.example" and envelope.rcpt_tos == ["anna@example.org"]
    mail = recorder.parsed()
    assert mail["Message-ID"] == "<c1-s1-p1@shop.example>"
    assert mail["Subject"] == "Новая коллекция: sofas"
    assert mail["From"].addresses[0].display_name == "Home & Living"
    assert mail["Reply-To"] == "help@shop.example" and mail["X-Campaign"] == "c1"
    assert mail["List-Unsubscribe"] == "<https://shop.example/u/abc>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    parts = list(mail.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().strip() == "Plain ✓ text"
    assert parts[1].get_content().strip() == "<p>HTML <b>✓</b></p>"
    # Every line of what went on the wire is CRLF-terminated 7-bit-safe text within the SMTP limit.
    content = envelope.original_content
    assert isinstance(content, bytes)
    assert all(len(line) <= 998 for line in content.split(b"\r\n"))


def test_text_only_and_no_unsubscribe_for_transactional(smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    with plain(port) as channel:
        channel.send(message("email", "bob@example.org", subject="Receipt", text="Thanks", transactional=True))
    mail = recorder.parsed()
    assert mail.get_content_type() == "text/plain" and mail["List-Unsubscribe"] is None


def test_connection_is_reused_and_reopened_after_the_server_drops_it(smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    with plain(port, pool_size=1) as channel:
        for i in range(5):
            assert channel.send(message("email", "a@example.org", message_id=f"m{i}")).status == "sent"
        assert len(recorder.sessions) == 1
        # The server closes idle connections: the next send notices and retries on a new one.
        idle = channel._idle[0]
        idle.smtp.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        assert channel.send(message("email", "a@example.org", message_id="m5")).status == "sent"
    assert len(recorder.received) == 6 and len(recorder.sessions) == 2


def test_reply_codes_map_to_transient_and_permanent(smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    recorder.refuse = {"gone@example.org": "550 5.1.1 <gone@example.org>: user unknown",
                       "busy@example.org": "451 4.7.1 greylisted, try again"}
    with plain(port, pool_size=1) as channel:
        gone = channel.send(message("email", "gone@example.org"))
        busy = channel.send(message("email", "busy@example.org"))
        ok = channel.send(message("email", "fine@example.org"))
    assert gone.status == "permanent" and "550" in gone.error and "user unknown" in gone.error
    assert busy.status == "transient" and "451" in busy.error
    assert ok.status == "sent" and len(recorder.sessions) == 1  # refusals do not cost the connection
    assert plain(port).send(message("email", "not-an-address")).status == "permanent"


def test_unreachable_server_is_transient() -> None:
    result = plain(free_port(), timeout_s=2).send(message("email", "a@example.org"))
    assert result.status == "transient" and "cannot connect" in result.error


def test_starttls_with_auth(certificate: tuple[Path, Path]) -> None:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), tls_context=server_context(certificate),
                            require_starttls=True, authenticator=recorder.authenticate, auth_required=True)
    controller.start()
    try:
        config = {"host": "127.0.0.1", "port": controller.port, "security": "starttls", "from": "news@shop.example",
                  "username": "shop", "password": "s3cret", "ca_file": str(certificate[0]),
                  "timeout_s": 5}
        with build_channel("email", config) as channel:
            assert channel.send(message("email", "a@example.org")).status == "sent"
        assert recorder.logins == [(b"shop", b"s3cret")] and len(recorder.received) == 1
        # A wrong password is the sender's problem: transient with a long wait, never a bounce.
        with build_channel("email", {**config, "password": "wrong"}) as channel:
            refused = channel.send(message("email", "a@example.org"))
        assert refused.status == "transient" and refused.retry_after_s == 300.0 and "login" in refused.error
        # Without the CA the self-signed certificate is refused: transient, the message is not sent in clear.
        with build_channel("email", {**config, "ca_file": None}) as channel:
            untrusted = channel.send(message("email", "a@example.org"))
        assert untrusted.status == "transient" and len(recorder.received) == 1
    finally:
        controller.stop()


def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), ssl_context=server_context(certificate))
    controller.start()
    try:
        with build_channel("email", {"host": "127.0.0.1", "port": controller.port, "security": "ssl",
                                     "from": "news@shop.example", "ca_file": str(certificate[0])}) as channel:
            assert channel.send(message("email", "a@example.org")).status == "sent"
        assert len(recorder.received) == 1
    finally:
        controller.stop()


def test_send_many_uses_the_pool_in_parallel(smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    recorder.refuse = {f"u{i}@example.org": "550 5.1.1 no such user" for i in range(0, 30, 4)}
    with plain(port, pool_size=3, max_per_connection=4) as channel:
        results = channel.send_many([message("email", f"u{i}@example.org", message_id=f"m{i}") for i in range(30)])
        # Refusals keep their connection; each connection is recycled after 4 accepted messages.
    assert [r.status for r in results] == ["permanent" if i % 4 == 0 else "sent" for i in range(30)]
    assert [r.provider_message_id for r in results if r.ok] == [f"<m{i}@shop.example>" for i in range(30) if i % 4]
    assert sorted(e.rcpt_tos[0] for e in recorder.received) == sorted(f"u{i}@example.org" for i in range(30) if i % 4)
    assert 3 < len(recorder.sessions) <= 3 + 22 // 4 + 1


def test_config_errors_name_the_field() -> None:
    for config, field_name in [({"from": "a@b.c"}, "host"), ({"host": "h"}, "from"),
                               ({"host": "h", "from": "a@b.c", "security": "tls1"}, "security"),
                               ({"host": "h", "from": "a@b.c", "username": "u"}, "password"),
                               ({"host": "h", "from": "a@b.c", "reply_to": "Служба <help@b.c>"}, "reply_to"),
                               ({"host": "h", "from": "a@b.c", "dkim": {"domain": "b.c", "selector": "s",
                                                                          "private_key": "nope"}}, "dkim.private_key")]:
        with pytest.raises(ChannelConfigError) as info:
            build_channel("email", config)
        assert info.value.field == field_name


# -- DKIM ---------------------------------------------------------------------------------------


def verify_dkim(raw: bytes, public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """An independent check of a relaxed/relaxed rsa-sha256 signature, as a receiving server does."""
    headers, body = split_message(raw)
    name, value = next((n, v) for n, v in headers if n.lower() == b"dkim-signature")
    tags = {k.strip(): v.strip() for k, _, v in (t.partition("=") for t in
                                                 value.decode().replace("\r\n", "").split(";") if t.strip())}
    tags = {k: re.sub(r"\s+", "", v) if k in ("b", "bh") else v for k, v in tags.items()}
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"
    assert base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode() == tags["bh"], "body hash"
    signed = b""
    seen: dict[bytes, int] = {}
    for wanted in tags["h"].split(":"):
        matches = [(n, v) for n, v in headers if n.strip().lower() == wanted.encode()]
        count = seen.get(wanted.encode(), 0)
        if count < len(matches):
            n, v = matches[len(matches) - 1 - count]
            signed += relaxed_header(n, v)
        seen[wanted.encode()] = count + 1
    unsigned_value = re.sub(rb"b=[^;]*$", b"b=", value.replace(b"\r\n", b""))
    signed += relaxed_header(name, unsigned_value)[:-2]
    public_key.verify(base64.b64decode(tags["b"]), signed, padding.PKCS1v15(), hashes.SHA256())
    return tags


def test_dkim_signature_verifies_on_the_received_bytes(smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    with plain(port, dkim={"domain": "shop.example", "selector": "s2026", "private_key": pem}) as channel:
        channel.send(message("email", "anna@example.org", subject="Sofas  with   spaces", text="Line one  \n\n\n",
                             html="<p>Hi\tthere</p>", list_unsubscribe="https://shop.example/u/1",
                             list_unsubscribe_post=True))
        record = channel.dkim.dns_record()  # type: ignore[union-attr]
    raw = recorder.received[0].original_content
    assert isinstance(raw, bytes) and raw.startswith(b"DKIM-Signature:")
    tags = verify_dkim(raw, key.public_key())
    assert tags["d"] == "shop.example" and tags["s"] == "s2026"
    assert {"from", "to", "subject", "message-id", "list-unsubscribe", "list-unsubscribe-post"} <= set(
        tags["h"].split(":"))
    assert record.startswith("v=DKIM1; k=rsa; p=")
    # A changed subject or body breaks it, as it must.
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidSignature or the body-hash assertion
        verify_dkim(raw.replace(b"Sofas", b"Beds!"), key.public_key())
    with pytest.raises(AssertionError, match="body hash"):
        verify_dkim(raw.replace(b"</p>", b"</b>"), key.public_key())


def test_relaxed_canonicalisation_examples() -> None:
    # RFC 6376 3.4.5 example.
    assert relaxed_header(b"A", b" X") == b"a:X\r\n"
    assert relaxed_header(b"B ", b" Y\t\r\n\tZ  ") == b"b:Y Z\r\n"
    assert relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert relaxed_body(b"") == b""


def test_mime_edge_cases_parse_back(smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    long_subject = "Скидки на диваны и кресла для гостиной — только до воскресенья! " * 3
    long_line = "x" * 2000
    with plain(port, from_name="Дом и уют") as channel:
        channel.send(message("email", "a@example.org", subject=long_subject, text=long_line + "\nend"))
        channel.send(message("email", "b@example.org", subject="Hi\r\nBcc: victim@example.org",
                             headers={"X-Note": "one\r\nX-Injected: yes"}))
        bad = channel.send(message("email", "c@example.org", headers={"Bcc": "victim@example.org"}))
        bad_name = channel.send(message("email", "c@example.org", headers={"X Bad": "v"}))
    first = recorder.parsed(0)
    assert first["Subject"] == long_subject and first["From"].addresses[0].display_name == "Дом и уют"
    assert first.get_content().replace("\r\n", "\n").rstrip("\n") == long_line + "\nend"
    assert first["Content-Transfer-Encoding"] == "base64"
    content = recorder.received[0].original_content
    assert isinstance(content, bytes) and all(len(line) <= 998 for line in content.split(b"\r\n"))
    second = recorder.parsed(1)
    assert second["Bcc"] is None and second["X-Injected"] is None
    assert second["Subject"] == "Hi  Bcc: victim@example.org"
    assert bad.status == "permanent" and bad_name.status == "permanent" and len(recorder.received) == 2


@dataclass
class PipeliningRecorder(Recorder):
    """Advertises PIPELINING (aiosmtpd reads commands in order, so it handles pipelined groups)."""

    drop_once: set[str] = field(default_factory=set)

    async def handle_EHLO(self, server: SMTPServer, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", *responses[1:]]

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if envelope.rcpt_tos[0] in self.drop_once:
            self.drop_once.discard(envelope.rcpt_tos[0])
            assert server.transport is not None
            server.transport.close()  # the server dies before it answers the end of data
            return "451 gone"
        return await super().handle_DATA(server, session, envelope)


def test_pipelined_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from opencdp.campaigns.channels import smtp as smtp_module

    groups: list[int] = []
    real = smtp_module.send_pipelined

    def spy(smtp: Any, return_path: str, batch: Any, *args: Any) -> Any:
        groups.append(len(batch))
        return real(smtp, return_path, batch, *args)

    monkeypatch.setattr(smtp_module, "send_pipelined", spy)
    recorder = PipeliningRecorder(refuse={"u3@example.org": "550 5.1.1 no such user",
                                          "u7@example.org": "452 4.2.2 mailbox full"})
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with plain(controller.port, pool_size=2) as channel:
            batch = [message("email", f"u{i}@example.org", message_id=f"m{i}", text=f".leading dot {i}\n..two\n")
                     for i in range(40)]
            results = channel.send_many(batch)
            assert sum(groups) == 40 and len(groups) == 2  # two connections, one pipelined run each
            expected = ["permanent" if i == 3 else "transient" if i == 7 else "sent" for i in range(40)]
            assert [r.status for r in results] == expected
            assert results[0].provider_message_id == "<m0@shop.example>" and "550" in results[3].error
            assert len(recorder.received) == 38
            by_rcpt = {e.rcpt_tos[0]: e for e in recorder.received}
            assert recorder.parsed(recorder.received.index(by_rcpt["u5@example.org"])).get_content().replace(
                "\r\n", "\n") == ".leading dot 5\n..two\n"  # dot-stuffing undone by the server: the text arrives as written

            # The server drops the connection in the middle of a pipelined run: what was settled
            # stays, the rest goes again on fresh connections.
            recorder.received.clear()
            recorder.drop_once = {"v5@example.org"}
            again = channel.send_many([message("email", f"v{i}@example.org", message_id=f"n{i}") for i in range(12)])
        assert [r.status for r in again] == ["sent"] * 12
        assert {e.rcpt_tos[0] for e in recorder.received} == {f"v{i}@example.org" for i in range(12)}
    finally:
        controller.stop()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=200).filter(lambda t: t.isprintable()))
def test_encoded_words_decode_to_the_text(text: str) -> None:
    encoded = encode_words(text)
    assert encoded.isascii()
    if not text.isascii():
        assert all(len(word) <= 75 for word in encoded.split("\r\n "))
        decoded = str(make_header(decode_header(encoded.replace("\r\n ", " "))))
        assert decoded == text


def test_internationalised_addresses_with_and_without_smtputf8() -> None:
    """IDNA domains go everywhere; a non-ASCII local part needs SMTPUTF8, else a per-recipient failure."""
    for utf8 in (True, False):
        for recorder in (Recorder(), PipeliningRecorder()):
            controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=utf8)
            controller.start()
            try:
                with plain(controller.port) as channel:
                    batch = [message("email", "иван@пример.рф", message_id="u1"),
                             message("email", "anna@пример.рф", message_id="u2"),
                             message("email", "plain@example.org", message_id="u3"),
                             message("email", "bad@exa mple..рф", message_id="u4")]
                    results = channel.send_many(batch)
                    single = channel.send(message("email", "ёлка@пример.рф", message_id="u5"))
            finally:
                controller.stop()
            got = sorted(r for e in recorder.received for r in e.rcpt_tos)
            assert results[1].status == results[2].status == "sent"
            assert results[3].status == "permanent"
            if utf8:
                assert results[0].status == "sent" and single.status == "sent"
                assert got == sorted(["иван@xn--e1afmkfd.xn--p1ai", "anna@xn--e1afmkfd.xn--p1ai", "plain@example.org",
                                      "ёлка@xn--e1afmkfd.xn--p1ai"])
                envelope = next(e for e in recorder.received if e.rcpt_tos == ["иван@xn--e1afmkfd.xn--p1ai"])
                assert "SMTPUTF8" in [o.upper() for o in envelope.mail_options]
                parsed = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
                assert parsed["To"] == "иван@xn--e1afmkfd.xn--p1ai"
            else:
                for refused in (results[0], single):
                    assert refused.status == "permanent" and refused.error.startswith(NOT_SENT) and "SMTPUTF8" in refused.error
                assert got == ["anna@xn--e1afmkfd.xn--p1ai", "plain@example.org"]
