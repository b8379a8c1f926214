"""Requests the server makes to URLs its users chose (webhook receivers), safe from SSRF.

A webhook URL is attacker-controlled input that makes the server connect somewhere. The
policy refuses any target whose address is not globally routable (loopback, private,
link-local, multicast, reserved, and those forms hidden inside IPv6: IPv4-mapped, 6to4,
Teredo, NAT64), unless an admin allowed it by name, address or network; and it takes
https only, unless an admin allowed http. It is checked when subscribing and again at every
delivery, because DNS answers change (rebinding).

The sender is the standard library's, on a socket this module opens itself: it connects to
the very address that was checked (no second resolution between check and connect),
verifies the connected peer is that address, speaks TLS with the URL's host as SNI and for
certificate verification, and reads the answer itself (``_read_answer``: the status line,
the headers and a short prefix of the body; a redirect is an answer like any other, never
followed). httpx resolves names inside its transport, so pinning the checked address there
means replacing its network backend; here it is one ``connect`` call. ``http.client``'s
parser (the email package's, for the headers) cost a third of a delivery's CPU. Every read
is bounded by what is left of the total deadline, so a receiver trickling bytes cannot
hold a delivery past it, and the head of an answer by its size and number of headers.

A connection the answer allows to keep (HTTP/1.1, a body of known length up to
``KEEP_BODY_BYTES``, read whole) serves the next
request to the same scheme, host and port, but only if its peer is among the addresses the
policy has just checked for that request: the name is still resolved and checked every
time. One the receiver closed meanwhile is replaced, the request sent again.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any
from urllib.parse import urlsplit

from modelyard.domain.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 30.0
PREFIX_BYTES = 512  # how much of an answer's body is kept
KEEP_BODY_BYTES = 16 * 1024  # a longer body is not read to its end: the connection closes
MAX_HEAD_BYTES = 32 * 1024  # the status line and headers of an answer, at most
MAX_HEADERS = 100
MAX_URL_LENGTH = 2048
IDLE_SECONDS = 20.0  # a kept connection older than this is closed, not reused
MAX_IDLE_PER_TARGET = 32  # one receiver often serves many subscriptions, a worker each
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_USER_AGENT = "Modelyard-Webhooks/1"


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system resolves ``host`` to, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class OutboundError(Exception):
    """A request that got no answer (or an answer from the wrong place).

    ``error_class`` is the short, stable name the delivery log records (``refused``,
    ``dns``, ``connect_timeout``, ``connection_refused``, ``tls_certificate``, ``tls``,
    ``timeout``, ``protocol``, ``peer_mismatch``, ``network``).
    """

    def __init__(self, error_class: str, detail: str) -> None:
        super().__init__(detail)
        self.error_class = error_class
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Target:
    """A URL the policy accepted, with the addresses it resolved to and checked."""

    scheme: str
    host: str  # lower case, for SNI, the Host header and certificate checks
    port: int
    path: str  # path and query, what the request line carries
    addresses: tuple[IPAddress, ...]

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


@dataclass(frozen=True, slots=True)
class Answer:
    """What a receiver answered: the status, Retry-After, a prefix of the body."""

    status: int
    retry_after: str | None
    body_prefix: bytes
    latency_us: int


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Where the server may send requests, and how long it waits for them.

    ``allowed_hosts`` (names, exact) and ``allowed_networks`` are what an admin allows
    despite being non-global; a target allowed that way may also be plain http (internal
    receivers seldom have certificates). ``allow_http`` allows http everywhere.
    """

    allow_http: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = system_resolver
    tls: ssl.SSLContext | None = None  # None: the system's trust store, verification on
    connect_timeout: float = CONNECT_TIMEOUT
    total_timeout: float = TOTAL_TIMEOUT
    prefix_bytes: int = field(default=PREFIX_BYTES)
    _idle: _Idle = field(default_factory=lambda: _Idle(), compare=False, repr=False)

    @classmethod
    def from_config(
        cls, allow_http: bool, allow_hosts: str | Iterable[str], **options: Any
    ) -> OutboundPolicy:
        """Parse MODELYARD_WEBHOOK_ALLOW_HOSTS: comma-separated names, IPs and CIDRs."""
        entries = allow_hosts.split(",") if isinstance(allow_hosts, str) else allow_hosts
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or not _valid_hostname(entry):
                raise InvalidInput(
                    f"webhook allow list: {entry!r} is neither a host name, an IP nor a CIDR"
                )
            hosts.add(_normal_host(entry))
        return cls(
            allow_http=allow_http,
            allowed_hosts=frozenset(hosts),
            allowed_networks=tuple(networks),
            **options,
        )

    # -- checking -------------------------------------------------------------------------

    def check_url(self, url: str) -> None:
        """Refuse a URL the server must not send to (InvalidInput, code webhook_url_refused)."""
        try:
            self.target(url)
        except OutboundError as exc:
            raise InvalidInput(f"{url}: {exc.detail}", code="webhook_url_refused") from None

    def target(self, url: str) -> Target:
        """Parse, resolve and check ``url``; refusals are InvalidInput, DNS failures
        OutboundError("dns")."""
        scheme, host, port, path = _parse(url)
        name_allowed = host in self.allowed_hosts
        addresses = self._resolve(host, port)
        refusals = [] if name_allowed else [self._refusal(a) for a in addresses]
        refused = [reason for reason in refusals if reason]
        if refused:
            raise _refused(url, _explain(host, refused[0]))
        if scheme == "http" and not self.allow_http:
            allowed = name_allowed or all(self._in_allowed_network(a) for a in addresses)
            if not allowed:
                raise _refused(url, "only https is allowed (an admin may allow http)")
        return Target(scheme, host, port, path, addresses)

    def _resolve(self, host: str, port: int) -> tuple[IPAddress, ...]:
        literal = _ip_literal(host)
        if literal is not None:
            return (literal,)
        try:
            found = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise OutboundError("dns", f"cannot resolve {host}: {exc}") from None
        addresses = tuple(dict.fromkeys(_address(a) for a in found))
        if not addresses:
            raise OutboundError("dns", f"{host} resolves to no address")
        return addresses

    def _in_allowed_network(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allowed_networks)

    def _refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        if self._in_allowed_network(address):
            return None
        return non_global(address)

    # -- sending --------------------------------------------------------------------------

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to ``url`` once: no redirect followed, the checked address only.

        Raises OutboundError when there is no answer to record (refused, DNS, connect,
        TLS, timeout, protocol); any status, 3xx included, is an Answer.
        """
        started = time.monotonic()
        deadline = started + self.total_timeout
        try:
            target = self.target(url)
        except InvalidInput as exc:
            raise OutboundError("refused", exc.message) from None
        reused = self._idle.take(target)
        if reused is not None:
            try:
                return self._exchange(target, *reused, body, headers, started, deadline)
            except _Stale:
                pass  # the receiver closed it while it was idle: once more, on a new one
        sock, peer = self._connect(target, deadline)
        try:
            return self._exchange(target, sock, peer, body, headers, started, deadline)
        except _Stale as stale:
            raise OutboundError("network", f"the connection closed: {stale}") from None

    def _exchange(
        self,
        target: Target,
        sock: socket.socket,
        peer: IPAddress,
        body: bytes,
        headers: Mapping[str, str],
        started: float,
        deadline: float,
    ) -> Answer:
        """One request and its answer on ``sock``, which is kept for the next request when
        the answer allows it (HTTP/1.1, not ``Connection: close``, the body read whole)."""
        keep = False
        reader = _Reader(sock, deadline)
        try:
            request = _request_bytes(target, body, headers)
            sock.settimeout(_left(deadline))
            sock.sendall(request)
            status, retry_after, prefix, keep = _read_answer(reader, self.prefix_bytes)
            return Answer(
                status=status,
                retry_after=retry_after,
                body_prefix=prefix,
                latency_us=round((time.monotonic() - started) * 1_000_000),
            )
        except (BrokenPipeError, ConnectionResetError) as exc:
            if reader.received == 0:
                raise _Stale(repr(exc)) from None
            raise OutboundError("network", str(exc)) from None
        except OutboundError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise OutboundError("tls_certificate", str(exc.verify_message)) from None
        except ssl.SSLError as exc:
            raise OutboundError("tls", str(exc)) from None
        except TimeoutError:
            raise OutboundError("timeout", f"no answer within {self.total_timeout:g} s") from None
        except _Malformed as exc:
            raise OutboundError("protocol", f"not an HTTP answer: {exc}") from None
        except OSError as exc:
            raise OutboundError("network", str(exc)) from None
        finally:
            if keep:
                self._idle.give(target, sock, peer)
            else:
                sock.close()

    def _connect(self, target: Target, deadline: float) -> tuple[socket.socket, IPAddress]:
        """A connection to one of the checked addresses (in order), TLS when https, and
        the address it is connected to."""
        failure = OutboundError("network", "no address to connect to")
        for address in target.addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(min(self.connect_timeout, _left(deadline)))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect((str(address), target.port))
                peer = target_peer(sock)
                if peer != address:
                    raise OutboundError("peer_mismatch", f"connected to {peer}, not {address}")
                if target.scheme == "https":
                    context = self.tls or _default_tls()
                    sock.settimeout(_left(deadline))
                    return context.wrap_socket(sock, server_hostname=target.host), peer
                return sock, peer
            except OutboundError:
                sock.close()
                raise
            except ssl.SSLCertVerificationError as exc:
                sock.close()
                raise OutboundError("tls_certificate", str(exc.verify_message)) from None
            except ssl.SSLError as exc:
                sock.close()
                raise OutboundError("tls", str(exc)) from None
            except TimeoutError:
                sock.close()
                failure = OutboundError("connect_timeout", f"{address}: no connection in time")
            except ConnectionRefusedError:
                sock.close()
                failure = OutboundError("connection_refused", f"{address}: connection refused")
            except OSError as exc:
                sock.close()
                failure = OutboundError("network", f"{address}: {exc}")
        raise failure


@lru_cache(maxsize=4096)
def non_global(address: IPAddress) -> str | None:
    """Why ``address`` is not a public Internet address, or None when it is one.

    ``is_global`` alone lets multicast through and does not look inside IPv6 forms that
    carry an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64): those are judged by the
    address they carry.
    """
    address = _unmapped(address)
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = non_global(embedded)
            if reason:
                return f"{reason} ({embedded} inside {address})"
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def target_peer(sock: socket.socket) -> IPAddress:
    """The address a socket is connected to, IPv4-mapped forms unwrapped."""
    return _address(sock.getpeername()[0])


class _Stale(Exception):
    """A kept connection the receiver had closed: nothing was answered on it."""


class _Idle:
    """Connections kept open between requests, by scheme, host and port (a delivery
    worker sends many requests to one receiver: a new TCP and TLS handshake each time cost
    more than the request). One is reused only when its peer is among the addresses the
    policy has just checked for this request, so the rules hold as for a new connection.
    (The peer is noted when the connection is made: a connected socket's peer never
    changes.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str, int], list[tuple[float, socket.socket, IPAddress]]] = {}

    def take(self, target: Target) -> tuple[socket.socket, IPAddress] | None:
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(target.key, [])
            while kept:
                since, sock, peer = kept.pop()
                if now - since < IDLE_SECONDS and peer in target.addresses:
                    return sock, peer
                sock.close()
        return None

    def give(self, target: Target, sock: socket.socket, peer: IPAddress) -> None:
        with self._lock:
            kept = self._kept.setdefault(target.key, [])
            kept.append((time.monotonic(), sock, peer))
            while len(kept) > MAX_IDLE_PER_TARGET:
                kept.pop(0)[1].close()


class _Malformed(Exception):
    """An answer that is not HTTP/1.x, or breaks off in the middle."""


class _Reader:
    """The bytes of an answer, every read bounded by what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = bytearray()
        self.received = 0  # bytes read so far (none: the receiver closed before answering)

    def line(self) -> bytes:
        """The next line of the head, without its CRLF (or LF)."""
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise _Malformed(f"a line of its head is over {MAX_HEAD_BYTES} bytes")
            self._fill()
        line = bytes(self._buffer[:end]).removesuffix(b"\r")
        del self._buffer[: end + 1]
        return line

    def take(self, size: int) -> bytes:
        """Exactly ``size`` bytes."""
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def until_closed(self, size: int) -> bytes:
        """Up to ``size`` bytes of a body that ends when the connection does."""
        while len(self._buffer) < size and self._fill(eof_ok=True):
            pass
        return bytes(self._buffer[:size])

    @property
    def drained(self) -> bool:
        """Whether nothing past the answer arrived (else the connection is not reused)."""
        return not self._buffer

    def _fill(self, eof_ok: bool = False) -> bool:
        self._sock.settimeout(_left(self._deadline))
        chunk = self._sock.recv(65536)
        if not chunk:
            if eof_ok:
                return False
            if self.received == 0:
                raise ConnectionResetError("the connection closed before an answer")
            raise _Malformed("the connection closed in the middle of the answer")
        self.received += len(chunk)
        self._buffer += chunk
        return True


def _read_answer(reader: _Reader, prefix_bytes: int) -> tuple[int, str | None, bytes, bool]:
    """Status, Retry-After, the body's prefix, and whether the connection may be kept."""
    status, persistent, headers = _read_head(reader)
    while 100 <= status < 200:  # interim answers (100 Continue, 103 Early Hints)
        status, persistent, headers = _read_head(reader)
    complete = True
    if status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body, complete = _read_chunked(reader, prefix_bytes)
    elif "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise _Malformed(f"Content-Length {length[:40]!r}")
        complete = int(length) <= KEEP_BODY_BYTES
        body = reader.take(int(length) if complete else prefix_bytes)[:prefix_bytes]
    else:
        body, complete = reader.until_closed(prefix_bytes), False
    closes = "close" in headers.get("connection", "").lower()
    keep = persistent and complete and not closes and reader.drained
    return status, headers.get("retry-after"), body, keep


def _read_head(reader: _Reader) -> tuple[int, bool, dict[str, str]]:
    """The status, whether HTTP/1.1 (persistent), and the headers by lower-case name."""
    line = reader.line()
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.0", b"HTTP/1.1") or not code.isdigit() or len(code) != 3:
        raise _Malformed(f"the status line is {line[:80]!r}")
    headers: dict[str, str] = {}
    name = ""
    size = len(line)
    for count in itertools.count():
        if not (line := reader.line()):
            break
        size += len(line)
        if size > MAX_HEAD_BYTES or count >= MAX_HEADERS:
            raise _Malformed(f"its head is over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers")
        if line[:1] in (b" ", b"\t") and name:  # an obsolete continuation line
            headers[name] += " " + line.strip().decode("latin-1")
            continue
        raw, colon, value = line.partition(b":")
        if not colon or not raw or raw != raw.strip():
            raise _Malformed(f"a header line is {line[:80]!r}")
        name = raw.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    return int(code), version == b"HTTP/1.1", headers


def _read_chunked(reader: _Reader, prefix_bytes: int) -> tuple[bytes, bool]:
    """A chunked body's prefix, and whether it ended within ``KEEP_BODY_BYTES``."""
    body = bytearray()
    while True:
        size_text = reader.line().split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _Malformed(f"a chunk size is {size_text[:40]!r}") from None
        if size == 0:
            while reader.line():  # trailers
                pass
            return bytes(body[:prefix_bytes]), True
        if len(body) + size > KEEP_BODY_BYTES:
            return bytes((body + reader.take(min(size, prefix_bytes)))[:prefix_bytes]), False
        body += reader.take(size)
        if reader.take(2) != b"\r\n":
            raise _Malformed("a chunk does not end in CRLF")


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _request_bytes(target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    fields = {
        "Host": target.host_header,
        "User-Agent": _USER_AGENT,
        "Content-Type": "application/json",
        **headers,
        "Content-Length": str(len(body)),
    }
    lines = [f"POST {target.path} HTTP/1.1"]
    for name, value in fields.items():
        field_text = name + value
        if "\r" in field_text or "\n" in field_text or "\0" in field_text:
            raise OutboundError("protocol", f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@lru_cache(maxsize=1024)  # every delivery parses its subscription's URL again
def _parse(url: str) -> tuple[str, str, int, str]:
    if len(url) > MAX_URL_LENGTH:
        raise _refused(url[:80] + "...", f"longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise _refused(url, "holds white space or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refused(url, f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refused(url, "the scheme must be https (or http where an admin allows it)")
    if parts.username is not None or parts.password is not None:
        raise _refused(url, "credentials in the URL would be logged; the signature authenticates")
    host = _normal_host(parts.hostname or "")
    if not host or (_ip_literal(host) is None and not _valid_hostname(host)):
        raise _refused(url, "no valid host name")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or (443 if scheme == "https" else 80), path


def _normal_host(host: str) -> str:
    return host.lower().rstrip(".")


@lru_cache(maxsize=1024)
def _ip_literal(host: str) -> IPAddress | None:
    try:
        return _address(host.split("%", 1)[0])
    except ValueError:
        return None


@lru_cache(maxsize=4096)  # parsing an address in Python costs more than sending to it
def _address(text: str) -> IPAddress:
    """The address ``text`` names (ValueError if none), IPv4-mapped forms unwrapped."""
    return _unmapped(ipaddress.ip_address(text))


def _unmapped(address: IPAddress) -> IPAddress:
    """``::ffff:127.0.0.1`` is 127.0.0.1: connecting to one connects to the other."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _valid_hostname(host: str) -> bool:
    labels = _normal_host(host).split(".")
    return len(host) <= 253 and all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in labels
    )


def _explain(host: str, reason: str) -> str:
    if _ip_literal(host) is not None:
        return f"the address is {reason}; an admin may allow it (MODELYARD_WEBHOOK_ALLOW_HOSTS)"
    return (
        f"{host} resolves to an address that is {reason}; an admin may allow it"
        " (MODELYARD_WEBHOOK_ALLOW_HOSTS)"
    )


def _refused(url: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{url}: {reason}", code="webhook_url_refused")


@cache
def _default_tls() -> ssl.SSLContext:
    """The system's trust store with hostname checks: made once, it reads every CA file."""
    return ssl.create_default_context()
