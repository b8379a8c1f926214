"""A registry server as a Transport: requests over HTTP, as they are.

Three ways out, chosen per request, all honouring the proxy environment (HTTP_PROXY,
HTTPS_PROXY, ALL_PROXY, NO_PROXY) as httpx does:

- JSON requests: keep-alive ``http.client`` connections (``DirectConnections``), or httpx
  when a proxy applies;
- uploads: a whole file (``FileBody``) with ``sendfile`` on an ``http.client`` connection,
  or httpx when a proxy applies; other streamed bodies through httpx;
- downloads and event streams (``stream=True``): ``http.client`` on a connection of their
  own, or httpx when a proxy applies to where they go. They follow redirects (an object
  store's URL, later), and send the token to the registry's origin only.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from modelyard.client.connections import CONNECT_TIMEOUT, DirectConnections, proxied
from modelyard.client.transport import Chunks, FileBody, Request, Response
from modelyard.domain.errors import Unavailable

DOWNLOAD_CHUNK = 4 * 1024 * 1024
SENDFILE_SLICE = 8 * 1024 * 1024  # an upload's progress is reported this often
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_FAILURES = (httpx.TransportError, OSError, http.client.HTTPException)


class HttpTransport:
    def __init__(self, url: str, *, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._direct = None if proxied(self.url) else DirectConnections(self.url, timeout)

    @property
    def client(self) -> httpx.Client:
        """The httpx client, made on first use: making one costs ~40 ms (its TLS context),
        which a CLI command that never streams an upload need not pay."""
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.url, timeout=httpx.Timeout(self.timeout, connect=10.0)
            )
        return self._client

    def send(self, request: Request) -> Response:
        try:
            if request.stream:
                return self._download(request)
            if self._direct is not None and isinstance(request.body, FileBody):
                return self._send_file(request, request.body)
            if self._direct is not None and isinstance(request.body, bytes):
                status, headers, body = self._direct.send(
                    request.method, request.target, request.body or None, dict(request.headers)
                )
                return Response(status, headers, body)
            answer = self.client.request(
                request.method, request.target, content=request.body, headers=request.headers
            )
            return Response(answer.status_code, dict(answer.headers), answer.content)
        except _FAILURES as exc:
            raise self._unreachable(exc) from None

    def _send_file(self, request: Request, body: FileBody) -> Response:
        """Upload a whole file with ``sendfile`` on a connection of its own.

        The kernel moves the file's page-cache pages into the socket: the bytes never pass
        through this process (httpx would read them into memory and copy them into the
        socket, a pass of its own). The connection is closed after the answer: the server
        may take a raw upload's connection over and never reads another request on it.
        """
        parts = urlsplit(self.url)
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = kind(parts.hostname or "", parts.port, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
            sock: socket.socket = conn.sock  # set by connect()
            sock.settimeout(self.timeout)
            conn.putrequest(
                request.method,
                parts.path.rstrip("/") + request.target,
                skip_host=False,
                skip_accept_encoding=True,
            )
            for name, value in request.headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            try:
                _sendfile(sock, body)
            except OSError:
                # The server may answer before it has read the body (a refusal): read
                # that answer rather than report a broken pipe.
                with contextlib.suppress(OSError, http.client.HTTPException):
                    answer = conn.getresponse()
                    return Response(answer.status, _lowered(answer), answer.read())
                raise
            answer = conn.getresponse()
            return Response(answer.status, _lowered(answer), answer.read())
        finally:
            conn.close()

    def _download(self, request: Request) -> Response:
        """GET as a stream, following redirects; the token stays with the registry's origin."""
        url = self.url + request.target
        headers = dict(request.headers)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._open(request.method, url, headers)
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.close()
            url = urljoin(url, location)
            if _origin(url) != _origin(self.url):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise Unavailable(
            f"{request.path}: more than {MAX_REDIRECTS} redirects", code="too_many_redirects"
        )

    def _open(self, method: str, url: str, headers: dict[str, str]) -> Response:
        if proxied(url):
            sent = self.client.send(
                self.client.build_request(method, url, headers=headers), stream=True
            )
            lowered = {k.lower(): v for k, v in sent.headers.items()}
            return Response(sent.status_code, lowered, chunks=self._via_httpx(sent))
        # Bulk bytes go through http.client rather than httpx where no proxy applies: its
        # buffered reads keep up with the disk (~1 GB/s here) where httpx's 64 KiB reads
        # through h11 reach ~400 MB/s.
        parts = urlsplit(url)
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = kind(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, target, headers=headers)
            answer = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        live = answer.getheader("content-type", "").startswith("text/event-stream")
        return Response(
            answer.status,
            _lowered(answer),
            chunks=self._direct_chunks(conn, answer, live),
            readinto=None if live else self._direct_readinto(answer),
            on_close=conn.close,
        )

    def _direct_readinto(self, answer: http.client.HTTPResponse) -> Callable[[memoryview], int]:
        def readinto(view: memoryview) -> int:
            try:
                return answer.readinto(view)
            except _FAILURES as exc:
                raise self._unreachable(exc) from None

        return readinto

    def _direct_chunks(
        self, conn: http.client.HTTPConnection, answer: http.client.HTTPResponse, live: bool
    ) -> Chunks:
        # A live stream (Server-Sent Events) is handed over as each piece arrives; a file
        # in big reads, which wait for a whole chunk.
        read = answer.read1 if live else answer.read
        try:
            while chunk := read(DOWNLOAD_CHUNK):
                yield chunk
        except _FAILURES as exc:
            raise self._unreachable(exc) from None
        finally:
            conn.close()

    def _via_httpx(self, sent: httpx.Response) -> Chunks:
        try:
            yield from sent.iter_raw()
        except _FAILURES as exc:
            raise self._unreachable(exc) from None
        finally:
            sent.close()

    def _unreachable(self, exc: Exception) -> Unavailable:
        untrusted = _certificate_error(exc)
        if untrusted is not None:
            return Unavailable(
                f"cannot verify the TLS certificate of {self.url} ({untrusted.verify_message}):"
                " if your own CA signed it, point SSL_CERT_FILE at that CA's PEM bundle",
                code="unreachable",
            )
        return Unavailable(
            f"cannot reach Modelyard at {self.url} ({exc.__class__.__name__}): is"
            " 'modelyard serve' running there? Set MODELYARD_URL or --url to point elsewhere.",
            code="unreachable",
        )

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._client is not None:
            self._client.close()


def _sendfile(sock: socket.socket, body: FileBody) -> None:
    """``body``'s bytes into ``sock`` by the kernel, SENDFILE_SLICE at a time for progress;
    ``socket.sendfile`` itself falls back to reads and sends where sendfile cannot work
    (TLS, a file that is no regular file)."""
    with body.path.open("rb") as handle:
        done = 0
        while done < body.size:
            sent = sock.sendfile(handle, done, min(SENDFILE_SLICE, body.size - done))
            if sent == 0:
                raise OSError(f"{body.path} ended after {done} of {body.size} bytes")
            done += sent
            body.advance(sent)


def _lowered(answer: http.client.HTTPResponse) -> dict[str, str]:
    return {k.lower(): v for k, v in answer.getheaders()}


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind ``exc`` (http.client raises it, httpx wraps it)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
