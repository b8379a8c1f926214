"""One resolve client process of ``_common.concurrent_gets``: standard library only, so that
the MLflow venv's python runs the very same client.

Usage: ``python _client.py HOST PORT PATH N [BODY_FILE]``. Connects and sends one untimed
request, prints ``ready``, waits for a line on stdin, then times N requests on the same
keep-alive connection (GETs, or POSTs of BODY_FILE's JSON: a model server's predictions)
and prints ``{"samples": [seconds, ...], "start": t, "end": t}`` (``time.time``, so that
the parent can put every client's window on one clock).
"""

from __future__ import annotations

import http.client
import json
import sys
import time


def get(conn: http.client.HTTPConnection, path: str, payload: bytes | None = None) -> None:
    if payload is None:
        conn.request("GET", path)
    else:
        conn.request("POST", path, payload, {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    if not 200 <= response.status < 300 or not body:  # 201: a registration
        raise RuntimeError(f"{path} answered {response.status}: {body[:200]!r}")


def main(argv: list[str]) -> int:
    host, port, path, n = argv[:4]
    payload = None
    if len(argv) > 4:
        with open(argv[4], "rb") as handle:
            payload = handle.read()
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    get(conn, path, payload)
    print("ready", flush=True)
    sys.stdin.readline()
    samples: list[float] = []
    start = time.time()
    for _ in range(int(n)):
        t = time.perf_counter()
        get(conn, path, payload)
        samples.append(time.perf_counter() - t)
    end = time.time()
    conn.close()
    print(json.dumps({"samples": samples, "start": start, "end": end}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
