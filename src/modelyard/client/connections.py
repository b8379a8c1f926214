"""Keep-alive HTTP/1.1 connections from the standard library, for the SDK's JSON requests.

httpx costs about 0.27 ms per request on top of the server's own time (resolve p50 through
httpx 0.55 ms, through ``http.client`` 0.29 ms, same server, same run). For ``resolve``,
the call every downstream service makes, that is half of it. So when no proxy applies,
requests go through ``http.client``; httpx carries uploads and anything a proxy must see.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import urllib.request
import weakref
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 10.0


class DirectConnections:
    """One keep-alive connection per thread (``http.client`` connections are not
    thread-safe), reopened when the server has closed an idle one."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        # Weak: a thread's connection goes (and its socket closes) with the thread.
        self._opened: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()

    def send(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read the whole answer: (status, headers, body).

        Raises OSError or http.client.HTTPException when the server cannot be reached.
        """
        conn = self._connection()
        try:
            conn.request(method, self._prefix + target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            conn.close()  # half-used: the next request opens a fresh one
            raise
        if response.will_close:
            conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = kind(self._host, self._port)
            self._local.conn = conn
            with self._lock:
                self._opened.add(conn)
        elif conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
            # Readable while idle: the server closed it (keep-alive timeout) or broke it.
            conn.close()
        if conn.sock is None:
            # A host that does not answer fails within CONNECT_TIMEOUT, as with httpx;
            # reads then wait up to the transport's timeout.
            conn.timeout = CONNECT_TIMEOUT
            conn.connect()
            sock: socket.socket = conn.sock  # type: ignore[assignment]  # set by connect()
            sock.settimeout(self._timeout)
        return conn

    def close(self) -> None:
        with self._lock:
            opened = list(self._opened)
            self._opened.clear()
        for conn in opened:
            conn.close()


def proxied(url: str) -> bool:
    """Whether the environment sends requests for ``url`` through a proxy (as httpx would:
    HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")
