"""The journal bell: a commit wakes waiters at once, and events written elsewhere are
heard within the poll."""

from __future__ import annotations

import asyncio
import threading
import time

from modelyard.domain.access import Caller
from modelyard.service import RegistryService
from modelyard.storage.db.bell import JournalBell


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

    assert asyncio.run(main()) == 3


def test_a_wait_times_out_with_the_head_unchanged() -> None:
    bell = JournalBell(lambda: 5, poll=0.01)
    assert bell.wait(5, timeout=0.05) == 5
    assert asyncio.run(bell.wait_async(5, timeout=0.05)) == 5


def test_a_cancelled_async_waiter_leaves_nothing_behind() -> None:
    bell = JournalBell(lambda: 0, poll=60.0)

    async def main() -> None:
        waiter = asyncio.ensure_future(bell.wait_async(0, timeout=30))
        while not bell._futures:
            await asyncio.sleep(0)
        waiter.cancel()  # as when a stream's client goes away
        await asyncio.gather(waiter, return_exceptions=True)

    asyncio.run(main())
    assert not bell._futures
