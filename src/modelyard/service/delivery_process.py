"""The server's webhook delivery, in a process of its own.

Delivering costs CPU in Python for every event and subscriber (a request built, signed,
sent and its answer read, the bookkeeping written). In the server's process that work
takes the interpreter's lock from the request handlers, and registrations slowed to a
fifth with ten subscriptions; in a child process it runs beside them. The parent passes
each ring of its journal bell down a pipe (one line, the seq: ``ring`` never blocks, and a
full pipe only delays the child to its own poll of the head), and redeliveries asked of it;
the child runs the ``Deliverer``, at a lower CPU priority than the server (``NICENESS``):
delivery is asynchronous by design, so when the CPU is short it is deliveries that wait,
not the requests of the people and pipelines using the registry. When the pipe closes
(the server stopped, or died) the child stops: it frees its leases for the next server.

The child starts with the first subscription: a registry with no webhooks runs no second
interpreter (a second of CPU at every start, and its memory). Until then the parent
checks for one each time the journal moves, which a subscription's creation does
(through this server at once, through another process within the bell's poll).

    python -m modelyard.service.delivery_process SETTINGS_JSON   (started by the server)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.config import Settings, open_service
from modelyard.service.delivery import Deliverer

if TYPE_CHECKING:
    from modelyard.service.registry import RegistryService

log = logging.getLogger("modelyard.delivery")
STOP_SECONDS = 15.0
# Added to the child's niceness: the scheduler then gives the server's request handlers the
# CPU first, and deliveries catch up in the time they leave.
NICENESS = 10


class DeliveryProcess:
    """The parent's side: start the child, feed it the bell, stop it."""

    def __init__(self, service: RegistryService) -> None:
        if service.settings is None:
            raise ValueError("delivery in a process of its own needs the service's Settings")
        self._service = service
        self._settings = service.settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        """Start the child now if any subscription exists, else with the first one."""
        self._service.db.bell.listeners.append(self._ring)
        self._service.deliveries.on_redeliver.append(self._nudge)
        if self._subscribed():
            self._spawn()
        else:
            waiter = threading.Thread(
                target=self._spawn_when_subscribed, name="modelyard-delivery-wait", daemon=True
            )
            waiter.start()

    def _subscribed(self) -> bool:
        with self._service.db.read() as tx:
            return tx.any_webhook()

    def _spawn_when_subscribed(self) -> None:
        bell = self._service.db.bell
        seen = bell.head()
        while not self._stopping.is_set():
            head = bell.wait(seen, 1.0)
            if head != seen:
                seen = head
                try:
                    subscribed = self._subscribed()
                except Exception:  # the database away for a moment: asked again next move
                    log.exception("checking for webhook subscriptions")
                    continue
                if subscribed:
                    self._spawn()
                    return

    def _spawn(self) -> None:
        settings = {
            k: str(v) if isinstance(v, Path) else v
            for k, v in dataclasses.asdict(self._settings).items()
        }
        with self._lock:
            if self._stopping.is_set() or self._proc is not None:
                return
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "modelyard.service.delivery_process", json.dumps(settings)],
                stdin=subprocess.PIPE,
            )
            assert self._proc.stdin is not None
            self._fd = self._proc.stdin.fileno()
            os.set_blocking(self._fd, False)

    def stop(self) -> None:
        """Close the pipe and wait for the child to stop (and free its leases)."""
        self._service.db.bell.listeners.remove(self._ring)
        self._service.deliveries.on_redeliver.remove(self._nudge)
        with self._lock:
            self._stopping.set()
            proc, self._proc = self._proc, None
        if proc is None:
            return
        with self._lock:
            assert proc.stdin is not None
            proc.stdin.close()
            self._fd = -1
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _ring(self, seq: int) -> None:
        self._send(f"{seq}\n")

    def _nudge(self, webhook_id: int) -> None:
        self._send(f"nudge {webhook_id}\n")

    def _send(self, line: str) -> None:
        with self._lock:
            if self._fd < 0:
                return
            # A busy child hears of it at its own poll; a dead one not at all.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self._fd, line.encode())


def main(argv: list[str]) -> int:
    """The child: deliver until stdin closes."""
    from modelyard.api import logs

    logs.configure(level="warning")  # in the server's format (MODELYARD_LOG_FORMAT)
    os.nice(NICENESS)
    fields = json.loads(argv[0])
    fields["data_dir"] = Path(fields["data_dir"])
    service = open_service(Settings(**fields), artifacts=False)
    deliverer = Deliverer(service)
    deliverer.start()
    try:
        for line in sys.stdin.buffer:
            word, _, rest = line.decode().strip().partition(" ")
            if word == "nudge":
                deliverer.nudge(int(rest))
            elif word.isdigit():
                service.db.bell.ring(int(word))
    finally:
        deliverer.stop()
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
