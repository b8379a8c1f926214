"""One resolve client process of ``_common.concurrent_gets``: standard library only, so that
the MLflow venv's python runs the very same client.

Usage: ``python _client.py HOST PORT PATH N``. Connects and sends one untimed GET, prints
``ready``, waits for a line on stdin, then times N GETs on the same keep-alive connection
and prints ``{"samples": [seconds, ...], "start": t, "end": t}`` (``time.time``, so that
the parent can put every client's window on one clock).
"""

from __future__ import annotations

import http.client
import json
import sys
import time


def get(conn: http.client.HTTPConnection, path: str) -> None:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200 or not body:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:200]!r}")


def main(argv: list[str]) -> int:
    host, port, path, n = argv
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    get(conn, path)
    print("ready", flush=True)
    sys.stdin.readline()
    samples: list[float] = []
    start = time.time()
    for _ in range(int(n)):
        t = time.perf_counter()
        get(conn, path)
        samples.append(time.perf_counter() - t)
    end = time.time()
    conn.close()
    print(json.dumps({"samples": samples, "start": start, "end": end}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
