"""The SSRF policy and the sender: what a webhook URL may reach, against a real receiver
on loopback. Names resolve through injected resolvers only: no test asks real DNS."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelyard.config import Settings, open_service
from modelyard.domain.errors import InvalidInput
from modelyard.service.outbound import OutboundError, OutboundPolicy, non_global
from tests.receivers import Reply, receiving

PUBLIC = "93.184.216.34"


class FakeDns:
    """A resolver the test controls (and can switch: DNS rebinding); counts its calls."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls += 1
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example/x", "only https"),
        ("ftp://hooks.example/x", "scheme must be https"),
        ("https://user:secret@hooks.example/x", "credentials"),
        ("https:///x", "no valid host"),
        ("https://hooks .example/", "white space"),
        ("https://127.0.0.1/", "loopback"),
        ("https://127.8.9.10/", "loopback"),
        ("https://[::1]/", "loopback"),
        ("https://10.1.2.3/", "private"),
        ("https://192.168.0.1/", "private"),
        ("https://172.16.5.4/", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[fe80::1]/", "link-local"),
        ("https://224.0.0.1/", "multicast"),
        ("https://[ff02::1]/", "multicast"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://240.0.0.1/", "reserved"),
        ("https://100.64.0.1/", "not globally routable"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:a9fe:a9fe]/", "link-local"),
        ("https://[2002:7f00:1::1]/", "loopback (127.0.0.1 inside"),
        ("https://[64:ff9b::a00:1]/", "private (10.0.0.1 inside"),
        ("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "127.0.0.1 inside"),
        ("https://internal.example/", "internal.example resolves to an address that is private"),
        ("https://mixed.example/", "loopback"),
        ("https://nowhere.example/", "cannot resolve nowhere.example"),
    ],
)
def test_refused_targets(url: str, reason: str) -> None:
    dns = FakeDns(
        {
            "hooks.example": [PUBLIC],
            "internal.example": ["10.0.0.7"],
            "mixed.example": [PUBLIC, "::ffff:127.0.0.1"],
        }
    )
    with pytest.raises(InvalidInput) as refused:
        OutboundPolicy(resolver=dns).check_url(url)
    assert refused.value.code == "webhook_url_refused"
    assert reason in refused.value.message


def test_accepted_targets_and_the_allow_list() -> None:
    dns = FakeDns({"hooks.example": [PUBLIC], "ci.internal": ["10.20.0.5"]})
    strict = OutboundPolicy(resolver=dns)
    strict.check_url("https://hooks.example/hook?x=1")
    strict.check_url(f"https://{PUBLIC}:8443/hook")
    strict.check_url("https://[2606:4700:4700::1111]/")

    allowing = OutboundPolicy.from_config(False, "ci.internal, 127.0.0.1,fd00::/8", resolver=dns)
    allowing.check_url("http://ci.internal:8080/hook")  # allowed by name: http too
    allowing.check_url("http://127.0.0.1:9/")
    allowing.check_url("https://[fd00::5]/")
    allowing.check_url("https://[::ffff:127.0.0.1]/")  # the same address as 127.0.0.1
    with pytest.raises(InvalidInput, match="private"):
        allowing.check_url("https://10.20.0.6/")  # the name was allowed, not its network
    with pytest.raises(InvalidInput, match="only https"):
        allowing.check_url("http://hooks.example/")
    OutboundPolicy(allow_http=True, resolver=dns).check_url("http://hooks.example/")


def test_allow_list_configuration() -> None:
    with pytest.raises(InvalidInput, match="neither a host name"):
        OutboundPolicy.from_config(False, "ci.internal,10.0.0.0/33")
    policy = OutboundPolicy.from_config(True, " CI.Internal. ,,[::1]")
    assert policy.allowed_hosts == {"ci.internal"}
    assert policy.allowed_networks == (ipaddress.ip_network("::1/128"),)


def test_settings_reach_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("MODELYARD_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    service = open_service(Settings.from_env(str(tmp_path)))
    try:
        assert service.outbound.allow_http
        service.outbound.check_url("http://127.0.0.1:8000/hook")
    finally:
        service.close()
    assert not Settings.from_env(str(tmp_path), webhook_allow_http=False).webhook_allow_http
    monkeypatch.setenv("MODELYARD_WEBHOOK_ALLOW_HTTP", "maybe")
    with pytest.raises(InvalidInput, match="true or false"):
        Settings.from_env(str(tmp_path))


def test_every_public_address_passes_and_no_private_one() -> None:
    assert non_global(ipaddress.ip_address(PUBLIC)) is None
    assert non_global(ipaddress.ip_address("2606:4700:4700::1111")) is None
    for text in ("127.0.0.1", "10.0.0.1", "::", "fc00::1", "198.18.0.1", "192.0.2.1"):
        assert non_global(ipaddress.ip_address(text)) is not None, text


def loopback_policy(**options: object) -> OutboundPolicy:
    return OutboundPolicy.from_config(False, "127.0.0.1", **options)  # type: ignore[arg-type]


def test_post_reaches_the_receiver_and_reads_a_short_prefix() -> None:
    with receiving(lambda _: Reply(201, {"Retry-After": "7"}, b"x" * 10_000)) as receiver:
        answer = loopback_policy().post(
            receiver.url("/hook?q=1"), b'{"a":1}', {"webhook-id": "msg_1"}
        )
        (request,) = receiver.wait_for(1)
    assert (answer.status, answer.retry_after) == (201, "7")
    assert answer.body_prefix == b"x" * 512
    assert answer.latency_us > 0
    assert request.path == "/hook?q=1"
    assert request.body == b'{"a":1}'
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["Content-Type"] == "application/json"


def test_redirects_are_answers_never_followed() -> None:
    with receiving() as elsewhere:
        redirect = Reply(302, {"Location": elsewhere.url("/stolen")}, b"")
        with receiving(lambda _: redirect) as receiver:
            answer = loopback_policy().post(receiver.url(), b"{}", {})
            receiver.wait_for(1)
        assert answer.status == 302
        assert elsewhere.received == []


def test_delivery_resolves_once_and_refuses_a_rebound_name() -> None:
    with receiving() as receiver:
        dns = FakeDns({"hooks.example": [PUBLIC]})
        policy = OutboundPolicy(allow_http=True, resolver=dns)
        url = f"http://hooks.example:{receiver.port}/hook"
        policy.check_url(url)  # subscribing: the name is public
        dns.answers["hooks.example"] = ["127.0.0.1"]  # rebinding, after the check
        with pytest.raises(OutboundError) as refused:
            policy.post(url, b"{}", {})
        assert refused.value.error_class == "refused"
        assert "loopback" in refused.value.detail
        dns.answers["hooks.example"] = ["169.254.169.254"]
        with pytest.raises(OutboundError, match="link-local"):
            policy.post(url, b"{}", {})
        assert receiver.received == []

        # An allowed address is reached with the one answer the check saw: no second lookup.
        allowed = OutboundPolicy.from_config(True, "127.0.0.1", resolver=dns)
        dns.answers["hooks.example"] = ["127.0.0.1"]
        dns.calls = 0
        assert allowed.post(url, b"{}", {}).status == 200
        assert dns.calls == 1
        assert receiver.wait_for(1)[0].headers["Host"] == f"hooks.example:{receiver.port}"


def test_connections_are_kept_and_reused_only_for_the_addresses_just_checked() -> None:
    dns = FakeDns({"hooks.example": ["127.0.0.1"]})
    policy = OutboundPolicy.from_config(True, "127.0.0.1", resolver=dns)
    with receiving(keep_alive=True) as receiver:
        url = f"http://hooks.example:{receiver.port}/hook"
        for _ in range(3):
            assert policy.post(url, b"{}", {}).status == 200
        assert len({r.client_port for r in receiver.wait_for(3)}) == 1  # one connection
        dns.answers["hooks.example"] = ["10.0.0.1"]  # rebinding: checked before any reuse
        with pytest.raises(OutboundError, match="private"):
            policy.post(url, b"{}", {})
        assert len(receiver.received) == 3


def test_a_kept_connection_serves_only_a_name_still_resolving_to_its_peer() -> None:
    """A kept connection remembers the peer checked when it was made; once the name
    resolves elsewhere (an allowed address here), the next request connects there rather
    than reusing the old connection: nothing listens at 127.0.0.2, so it is refused."""
    dns = FakeDns({"hooks.example": ["127.0.0.1"]})
    policy = OutboundPolicy.from_config(True, "127.0.0.0/8", resolver=dns)
    with receiving(keep_alive=True) as receiver:
        url = f"http://hooks.example:{receiver.port}/hook"
        assert policy.post(url, b"{}", {}).status == 200
        dns.answers["hooks.example"] = ["127.0.0.2"]
        with pytest.raises(OutboundError) as moved:
            policy.post(url, b"{}", {})
        assert moved.value.error_class == "connection_refused"
        assert len(receiver.wait_for(1)) == 1
        dns.answers["hooks.example"] = ["127.0.0.1"]
        assert policy.post(url, b"{}", {}).status == 200


def test_a_kept_connection_the_receiver_closed_is_replaced() -> None:
    policy = loopback_policy()
    with receiving(keep_alive=True, idle_timeout=0.1) as receiver:
        assert policy.post(receiver.url(), b"{}", {}).status == 200
        receiver.wait_for_closed(1)  # the receiver ended the idle connection
        assert policy.post(receiver.url(), b"{}", {}).status == 200
        first, second = receiver.wait_for(2)
        assert first.client_port != second.client_port


def test_failures_have_an_error_class() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(OutboundError) as refused:
        loopback_policy().post(f"http://127.0.0.1:{port}/", b"{}", {})
    assert refused.value.error_class == "connection_refused"
    with pytest.raises(OutboundError) as unresolved:
        OutboundPolicy(resolver=FakeDns({})).post("https://nowhere.example/", b"{}", {})
    assert unresolved.value.error_class == "dns"


def test_the_total_deadline_bounds_a_receiver_that_holds_its_answer() -> None:
    release = threading.Event()
    with receiving(lambda _: Reply(hold=release)) as receiver:
        started = time.monotonic()
        with pytest.raises(OutboundError) as late:
            loopback_policy(total_timeout=0.3).post(receiver.url(), b"{}", {})
        elapsed = time.monotonic() - started
        release.set()
    assert late.value.error_class == "timeout"
    assert 0.3 <= elapsed < 3


def test_a_trickling_receiver_cannot_outlast_the_deadline() -> None:
    """Each read waits only for what is left of the total, not a fresh timeout."""
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:

        def trickle() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.05):
                    conn.sendall(b"X-Slow: 1\r\n")

        thread = threading.Thread(target=trickle)
        thread.start()
        started = time.monotonic()
        with pytest.raises(OutboundError) as late:
            url = f"http://127.0.0.1:{server.getsockname()[1]}/"
            loopback_policy(total_timeout=0.5).post(url, b"{}", {})
        elapsed = time.monotonic() - started
        stop.set()
        thread.join()
    assert late.value.error_class in ("timeout", "protocol")
    assert elapsed < 3


class RawReceiver:
    """A loopback server answering each request with the next of ``answers``, raw bytes
    exactly as given (what a real server library would never send is the point)."""

    def __init__(self, answers: Sequence[bytes]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        request += chunk
                    if not chunk:
                        break
                    head, _, body = request.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(body) < length:
                        body += conn.recv(65536)
                    answer = self.answers.pop(0)
                    conn.sendall(answer)
                    if b"connection: close" in answer.lower() or b"HTTP/1.0" in answer[:8]:
                        break

    def close(self) -> None:
        self.server.close()
        self.thread.join(5)


def post_all(answers: Sequence[bytes]) -> tuple[list[tuple[int, bytes]], int]:
    """(status, body prefix) of a POST per answer, one policy; connections the server saw."""
    receiver = RawReceiver(answers)
    try:
        policy = loopback_policy()
        results = []
        for _ in answers:
            answer = policy.post(receiver.url, b"{}", {})
            results.append((answer.status, answer.body_prefix))
        return results, receiver.connections
    finally:
        receiver.close()


def test_answers_as_receivers_send_them_and_when_the_connection_is_kept() -> None:
    long_body = b"y" * 20_000
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 3\nX-Folded: a\n b\n\nbar",  # bare LF ends lines
        b"HTTP/1.1 500 Oops\r\nContent-Length: 20000\r\n\r\n" + long_body,  # too long to keep
        b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz",
        b"HTTP/1.0 200 OK\r\n\r\nuntil closed",
    ]
    results, connections = post_all(answers)
    assert results == [
        (200, b"ok"),
        (204, b""),
        (202, b"abcde"),
        (200, b"bar"),
        (500, b"y" * 512),
        (201, b"z"),
        (200, b"until closed"),
    ]
    # The first five share one connection, which the long body ends; the close and
    # HTTP/1.0 end theirs.
    assert connections == 3


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 40_000 + b"\r\n\r\n",
    ],
)
def test_what_is_not_an_http_answer_is_a_protocol_error(answer: bytes) -> None:
    receiver = RawReceiver([answer])
    try:
        with pytest.raises(OutboundError) as failed:
            loopback_policy().post(receiver.url, b"{}", {})
        assert failed.value.error_class == "protocol"
    finally:
        receiver.close()


# -- TLS: a test authority and certificates for names the fake DNS maps to loopback ------


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``name`` it signed: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str,
        issuer: str,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("Modelyard test CA", "Modelyard test CA", ca_key, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(name, "Modelyard test CA", key, ca_key, False)
    paths = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_tls_sends_the_name_and_verifies_the_certificate(tmp_path: Path) -> None:
    ca, cert, key = _certificate(tmp_path, "hooks.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, context: names.append(name)  # type: ignore[assignment,misc]
    trusting = ssl.create_default_context(cafile=str(ca))
    dns = FakeDns({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    with receiving(tls=server_tls) as receiver:
        policy = OutboundPolicy.from_config(False, "127.0.0.1", resolver=dns, tls=trusting)
        url = f"https://hooks.test:{receiver.port}/hook"
        assert policy.post(url, b"{}", {}).status == 200
        assert names == ["hooks.test"]
        assert receiver.wait_for(1)[0].headers["Host"] == f"hooks.test:{receiver.port}"

        # The same server under another name, or without the test CA: refused.
        with pytest.raises(OutboundError) as wrong_name:
            policy.post(f"https://other.test:{receiver.port}/hook", b"{}", {})
        assert wrong_name.value.error_class == "tls_certificate"
        system_trust = OutboundPolicy.from_config(False, "127.0.0.1", resolver=dns)
        with pytest.raises(OutboundError) as untrusted:
            system_trust.post(url, b"{}", {})
        assert untrusted.value.error_class == "tls_certificate"
        assert len(receiver.received) == 1
