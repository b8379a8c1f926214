"""The webhook benchmark's receiver, a process of its own (so that it takes no CPU from the
server's or the benchmark's interpreter): standard library only.

Usage: ``python -m benchmarks._receiver``. Prints ``port N`` once listening, then answers
commands on stdin, one JSON line each on stdout: ``count`` (requests per path), ``dump
PATH`` (for each request to PATH: its webhook-id, the event's seq, the latency from the
event's journal time to arrival, and the arrival time), ``hold`` (answer nothing from now
on: requests are counted on arrival and wait), ``release`` (answer them), ``quit``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_lock = threading.Lock()
_arrivals: dict[str, list[tuple[str, int, float, float]]] = defaultdict(list)
_answering = threading.Event()
_answering.set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        arrived = time.time()
        event = json.loads(body)["data"]["event"]
        journaled = datetime.fromisoformat(event["time"]).timestamp()
        with _lock:
            _arrivals[self.path].append(
                (self.headers["webhook-id"], event["seq"], arrived - journaled, arrived)
            )
        _answering.wait()
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()  # the connection stays open (HTTP/1.1), as most servers keep it

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        with _lock:
            if command == "count":
                answer: Any = {path: len(found) for path, found in _arrivals.items()}
            elif command == "dump":
                answer = list(_arrivals.get(argument, []))
            elif command in ("hold", "release"):
                (_answering.clear if command == "hold" else _answering.set)()
                answer = command
            else:
                break
        print(json.dumps(answer), flush=True)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
