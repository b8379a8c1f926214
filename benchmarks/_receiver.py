"""The webhook benchmark's receiver, a process of its own (so that it takes no CPU from the
server's or the benchmark's interpreter): standard library only.

It stands in for receivers on other machines, whose CPU would not be the registry's, so it
spends as little as it can here: one asyncio loop parsing just what it records (the
request line, Content-Length and webhook-id), where ``http.server`` (a thread and the
email package's header parser per request) took 0.15 ms of CPU a request, as much as
half a delivery. It keeps connections open (HTTP/1.1), as most servers do.

Usage: ``python -m benchmarks._receiver``. Prints ``port N`` once listening, then answers
commands on stdin, one JSON line each on stdout: ``count`` (requests per path), ``dump
PATH`` (for each request to PATH: its webhook-id, the event's seq, the latency from the
event's journal time to arrival, and the arrival time), ``hold`` (answer nothing from now
on: requests are counted on arrival and wait), ``release`` (answer them), ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

_ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"

_lock = threading.Lock()
_arrivals: dict[str, list[tuple[str, int, float, float]]] = defaultdict(list)
_holding = False
_held: list[asyncio.Transport] = []  # one answer owed to each, in arrival order


class _Connection(asyncio.Protocol):
    """Requests on one connection, one after another (a client waits for each answer)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            fields = dict(line.split(": ", 1) for line in lines[1:])
            headers = {name.lower(): value for name, value in fields.items()}
            length = int(headers.get("content-length", "0"))
            if len(self._buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self._record(lines[0].split(" ")[1], headers.get("webhook-id", ""), body)

    def _record(self, path: str, message: str, body: bytes) -> None:
        arrived = time.time()
        event = json.loads(body)["data"]["event"]
        journaled = datetime.fromisoformat(event["time"]).timestamp()
        assert self._transport is not None
        with _lock:
            _arrivals[path].append((message, event["seq"], arrived - journaled, arrived))
            if _holding:
                _held.append(self._transport)
                return
        self._transport.write(_ANSWER)


def _release() -> None:
    """Answer every request held, in the order they came (called in the loop)."""
    global _holding
    with _lock:
        _holding = False
        owed, _held[:] = list(_held), []
    for transport in owed:
        if not transport.is_closing():
            transport.write(_ANSWER)


def main() -> int:
    global _holding
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_Connection, "127.0.0.1", 0, backlog=1024))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        answer: Any = command
        with _lock:
            if command == "count":
                answer = {path: len(found) for path, found in _arrivals.items()}
            elif command == "dump":
                answer = list(_arrivals.get(argument, []))
            elif command == "hold":
                _holding = True
            elif command != "release":
                break
        if command == "release":
            loop.call_soon_threadsafe(_release)
        print(json.dumps(answer), flush=True)
    loop.call_soon_threadsafe(loop.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
