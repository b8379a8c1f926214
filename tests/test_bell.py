"""The journal bell: a commit wakes waiters at once, and events written elsewhere are
heard within the poll."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from pathlib import Path

from modelyard.domain.access import Caller
from modelyard.service import RegistryService
from modelyard.storage.db.bell import BellPeers, JournalBell
from tests.conftest import run_async


def test_a_commit_wakes_a_waiter_in_this_process(service: RegistryService) -> None:
    bell = service.db.bell
    bell.poll = 60.0  # only the ring can wake it within the test's timeout
    head = bell.head()
    woke: list[int] = []
    waiting = threading.Thread(target=lambda: woke.append(bell.wait(head, timeout=30)))
    waiting.start()
    service.create_model("churn", caller=Caller.local_user("tester"))
    waiting.join(30)
    assert woke and woke[0] > head


def test_a_rolled_back_write_rings_nothing(service: RegistryService) -> None:
    bell = service.db.bell
    head = bell.head()
    try:
        with service.db.write() as tx:
            tx.insert_model("ghost", "", {}, 0)
            raise RuntimeError("abandon")
    except RuntimeError:
        pass
    assert bell.wait(head, timeout=0.01) == head


def test_events_from_another_process_are_heard_within_the_poll() -> None:
    elsewhere = [0]
    bell = JournalBell(lambda: elsewhere[0], poll=0.01)
    threading.Timer(0.05, lambda: elsewhere.__setitem__(0, 7)).start()
    started = time.monotonic()
    assert bell.wait(0, timeout=30) == 7
    assert time.monotonic() - started < 30


def test_an_async_waiter_wakes_on_a_ring_from_another_thread() -> None:
    bell = JournalBell(lambda: 0, poll=60.0)

    async def main() -> int:
        waiter = asyncio.ensure_future(bell.wait_async(0, timeout=30))
        while not bell._futures:  # registered: now only the ring can wake it
            await asyncio.sleep(0)
        threading.Thread(target=bell.ring, args=(3,)).start()
        return await waiter

    assert run_async(main()) == 3


def test_a_wait_times_out_with_the_head_unchanged() -> None:
    bell = JournalBell(lambda: 5, poll=0.01)
    assert bell.wait(5, timeout=0.05) == 5
    assert run_async(bell.wait_async(5, timeout=0.05)) == 5


def test_a_cancelled_async_waiter_leaves_nothing_behind() -> None:
    bell = JournalBell(lambda: 0, poll=60.0)

    async def main() -> None:
        waiter = asyncio.ensure_future(bell.wait_async(0, timeout=30))
        while not bell._futures:
            await asyncio.sleep(0)
        waiter.cancel()  # as when a stream's client goes away
        await asyncio.gather(waiter, return_exceptions=True)

    run_async(main())
    assert not bell._futures


def test_sibling_workers_ring_each_other(tmp_path: Path) -> None:
    """``BellPeers``: a ring in one worker wakes a waiter in another at once (its database
    head never moves here and its poll is a minute: only the sibling's datagram can wake it),
    reaches that worker's listeners, and is not echoed back."""
    bells = [JournalBell(lambda: 0, poll=60.0) for _ in range(3)]
    peers = [BellPeers(bell, tmp_path, i, 3) for i, bell in enumerate(bells)]
    # A queue, not a list: listeners run after the waiters are woken, on the receiving thread.
    heard: queue.Queue[int] = queue.Queue()
    bells[1].listeners.append(heard.put)
    try:
        waiters = [
            threading.Thread(target=lambda b=b: woke.append(b.wait(0, timeout=30)))
            for b in bells[1:]
        ]
        woke: list[int] = []
        for waiter in waiters:
            waiter.start()
        bells[0].ring(7)
        for waiter in waiters:
            waiter.join(30)
        assert woke == [7, 7]
        assert heard.get(timeout=30) == 7
        bells[2].ring(9)  # and the other way
        assert bells[0].wait(7, timeout=30) == 9
        assert heard.get(timeout=30) == 9
        assert heard.empty()  # neither ring came back a second time
    finally:
        for peer in peers:
            peer.close()
    assert not list(tmp_path.iterdir())  # each worker's socket removed
