"""Several server processes on one port: what ``modelyard serve`` and ``serve-model`` share.

Each worker is a fresh interpreter (the ``spawn`` start method: nothing of the parent's
threads, connections or locks is inherited half-way) that binds its own socket with
SO_REUSEPORT, so the kernel spreads new connections over them. The parent only supervises:
SIGTERM and SIGINT are passed on to every worker, and a worker that ends on its own ends
the others, so the server stops as a whole and whatever restarts it (systemd, Kubernetes)
restarts all of it, rather than serving on with fewer processes than it was asked for.

Imports nothing of the server stack: ``serve-model`` runs without it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any, cast


def listening_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``shared``: other processes may bind the same
    port (SO_REUSEPORT) and the kernel spreads connections between them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_workers(target: Callable[..., object], args: Sequence[tuple[Any, ...]], name: str) -> int:
    """Run ``target(*a)`` in one spawned process for each ``a`` in ``args`` until they end;
    the exit status of the worst. Returns once every worker has ended."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=target, args=a, name=f"{name}-{i}") for i, a in enumerate(args)
    ]
    for worker in workers:
        worker.start()
    stopping = False

    def stop(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        running = {worker.sentinel: worker for worker in workers}
        while running:
            for ended in multiprocessing.connection.wait(list(running)):
                running.pop(cast(int, ended))
                if not stopping:
                    stop()  # one ended by itself: the others follow
        for worker in workers:
            worker.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return max((worker.exitcode or 0 for worker in workers), key=abs)
