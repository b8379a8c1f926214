"""Moving a big byte stream to a file: receive, sha256 and write on separate threads.

Every byte of an upload (server) or a download (client) is received, hashed and written.
hashlib and file writes release the GIL for large buffers, so on their own threads the
three overlap: on a two-core machine a transfer then costs about its slowest step, not
the sum of all three. The buffers travel from a fixed pool and back, so memory stays flat
in file size and no chunk is a fresh allocation whose pages have to be faulted in.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

# 2 MiB: each transfer in flight holds BUFFERS of them (8 MiB). 4 MiB measured the same
# throughput for twice the memory; 1 MiB cost more CPU per GiB (more hand-offs).
BUFFER_SIZE = 2 * 1024 * 1024
# One being filled, one being hashed, two being written, two spare to ride out a stall.
BUFFERS = 6
# Writes in flight at once: on this project's benchmark VM two O_DIRECT writes of 2 MiB
# kept its shared virtio disk busier than one (10-25% more MB/s), four no better than two.
WRITERS = 2
# O_DIRECT wants offsets, lengths and addresses aligned to the device's logical block size;
# 4 KiB covers every common device, and pool buffers are page-aligned (mmap).
DIRECT_ALIGN = 4096

# Parts of an object store's multipart upload: 8 MiB (S3's minimum is 5 MiB, but for the
# last), growing by 8 MiB every thousand parts, so that S3's 10,000 parts reach 440 GB
# without knowing the size in advance. The server and the SDK cut a file the same way.
PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000


def part_size(number: int) -> int:
    """The size of part ``number`` (from 1) of a multipart upload."""
    return PART_SIZE * (1 + (number - 1) // 1000)


def part_ranges(size: int) -> list[tuple[int, int]]:
    """(offset, length) of each part of a ``size``-byte blob: one part at least."""
    ranges: list[tuple[int, int]] = []
    offset = 0
    while offset < size or not ranges:
        length = min(part_size(len(ranges) + 1), size - offset)
        ranges.append((offset, length))
        offset += length
    return ranges


Step = Callable[[memoryview], None]
# The last step, given each buffer with its offset in the stream: buffers may reach it out
# of order, on several threads (WRITERS disk writes in flight at once).
Writer = Callable[[memoryview, int], None]
_Item = tuple[mmap.mmap, int, int] | None


class Pipeline:
    """Buffers from a fixed pool pass through ``steps`` in order, each step on its own thread.

    The caller copies bytes in with ``write``, then calls ``close``, which waits for every
    step and raises the first step's failure. After a failure the steps stop working but
    keep passing buffers along, so the caller never blocks for ever; ``write`` raises it
    early.

    Buffers are mapped and threads started only when needed: a stream that fits in one
    buffer (most files of a registration) runs its steps on the caller's thread in ``close``.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        writer: Writer | None = None,
        writers: int = WRITERS,
        buffers: int = BUFFERS,
        size: int = BUFFER_SIZE,
    ) -> None:
        self._steps = steps
        self._writer = writer
        self._writers = writers if writer is not None else 0
        self._size = size
        self._buffers = buffers
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        self._pool: list[mmap.mmap] = []
        stages = len(steps) + (1 if writer is not None else 0)
        self._inboxes: list[queue.Queue[_Item]] = [queue.Queue() for _ in range(stages)]
        self._threads: list[threading.Thread] = []
        self._current: mmap.mmap | None = None
        self._filled = 0
        self._offset = 0  # of the current buffer in the stream
        self._failure: BaseException | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into the pool, handing on each buffer as it fills."""
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                buffer = self._buffer()
                n = min(len(view) - done, self._size - self._filled)
                buffer[self._filled : self._filled + n] = view[done : done + n]
                self._filled += n
                done += n
                self._hand_on_if_full()

    def receive(self, read: Callable[[memoryview], int], limit: int) -> int:
        """Let ``read`` (a socket's ``recv_into``) fill the pool's buffers in place, until
        ``limit`` bytes or a read of 0; returns the bytes read.

        The bytes land where the steps read them: no copy between the socket and the hash.
        """
        done = 0
        while done < limit:
            buffer = self._buffer()
            room = min(self._size - self._filled, limit - done)
            with memoryview(buffer) as whole, whole[self._filled : self._filled + room] as view:
                n = read(view)
            if n <= 0:
                break
            self._filled += n
            done += n
            self._hand_on_if_full()
        return done

    def close(self) -> None:
        """Hand on the last partial buffer, wait for every step; raise a step's failure."""
        try:
            if self._current is not None and self._failure is None:
                if self._threads:
                    self._hand_on()
                else:
                    self._run_here()
            self._finish()
        finally:
            self._release()
        if self._failure is not None:
            raise self._failure

    def abort(self) -> None:
        """Stop: the steps skip whatever is still queued. Waits for them to wind down."""
        if self._failure is None:
            self._failure = _Aborted()
        self._finish()
        self._release()

    def _buffer(self) -> mmap.mmap:
        if self._failure is not None:
            raise self._failure
        if self._current is None:
            if self._free.empty() and len(self._pool) < self._buffers:
                self._pool.append(mmap.mmap(-1, self._size))
                self._free.put(self._pool[-1])
            self._current = self._free.get()
            self._filled = 0
        return self._current

    def _hand_on_if_full(self) -> None:
        if self._filled == self._size:
            self._hand_on()

    def _hand_on(self) -> None:
        assert self._current is not None
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._run, args=(i, step), name="modelyard-transfer")
                for i, step in enumerate(self._steps)
            ] + [
                threading.Thread(target=self._write_some, name="modelyard-transfer")
                for _ in range(self._writers)
            ]
            for thread in self._threads:
                thread.start()
        self._inboxes[0].put((self._current, self._filled, self._offset))
        self._offset += self._filled
        self._current = None

    def _run_here(self) -> None:
        assert self._current is not None
        try:
            with memoryview(self._current) as whole, whole[: self._filled] as view:
                for step in self._steps:
                    step(view)
                if self._writer is not None:
                    self._writer(view, self._offset)
        except BaseException as exc:  # raised by close, like a step thread's failure
            self._failure = exc

    def _finish(self) -> None:
        if any(thread.is_alive() for thread in self._threads):
            # The first stage's threads: one step's, or (no steps) every writer's.
            for _ in range(1 if self._steps else self._writers):
                self._inboxes[0].put(None)
        for thread in self._threads:
            thread.join()

    def _release(self) -> None:
        self._current = None
        for buffer in self._pool:
            buffer.close()
        self._pool = []

    def _run(self, index: int, step: Step) -> None:
        inbox = self._inboxes[index]
        outbox = self._inboxes[index + 1] if index + 1 < len(self._inboxes) else None
        while (item := inbox.get()) is not None:
            buffer, n, _ = item
            if self._failure is None:
                try:
                    with memoryview(buffer) as whole, whole[:n] as view:
                        step(view)
                except BaseException as exc:  # raised to the caller by write/close
                    self._failure = exc
            if outbox is not None:
                outbox.put(item)
            else:
                self._free.put(buffer)
        if outbox is not None:
            writers_next = self._writer is not None and index + 2 == len(self._inboxes)
            for _ in range(self._writers if writers_next else 1):
                outbox.put(None)  # one end mark for each thread that reads the outbox

    def _write_some(self) -> None:
        """One of the writer's threads: whichever buffer comes next, at its offset."""
        assert self._writer is not None
        inbox = self._inboxes[-1]
        while (item := inbox.get()) is not None:
            buffer, n, offset = item
            if self._failure is None:
                try:
                    with memoryview(buffer) as whole, whole[:n] as view:
                        self._writer(view, offset)
                except BaseException as exc:  # raised to the caller by write/close
                    self._failure = exc
            self._free.put(buffer)


class _Aborted(Exception):
    """Stands in for a failure once the caller gave up; never reaches anyone."""


class FileSink:
    """A new file written from whole buffers at their offsets, with O_DIRECT where the
    filesystem allows it; ``write_at`` may run on several threads at once.

    O_DIRECT hands the bytes to the disk by DMA instead of copying them into page-cache
    pages: on this project's benchmark machine that took the CPU cost of writing 1 GiB
    from 0.2-2.6 s (fresh pages of a VM) to 0.04 s, and left nothing for fsync to flush.
    A piece that is not a whole number of blocks (a stream's tail), a filesystem without
    O_DIRECT (tmpfs) or one that refuses an aligned write goes through a second,
    ordinary descriptor of the same file.
    """

    def __init__(self, path: Path, mode: int = 0o644) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        direct = getattr(os, "O_DIRECT", 0)
        self._fd = self._buffered = -1
        try:
            self._fd = os.open(path, flags | direct, mode)
            self._direct = bool(direct)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            self._fd = os.open(path, flags, mode)
            self._direct = False
        try:
            self._buffered = (
                os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
                if self._direct
                else self._fd
            )
        except BaseException:
            os.close(self._fd)
            raise

    def write_at(self, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            aligned = (offset + done) % DIRECT_ALIGN == 0 and (len(view) - done) % DIRECT_ALIGN == 0
            fd = self._fd if self._direct and aligned else self._buffered
            try:
                with view[done:] as rest:
                    done += os.pwrite(fd, rest, offset + done)
            except OSError as exc:
                if fd == self._buffered or exc.errno != errno.EINVAL:
                    raise
                self._direct = False  # refused: this file goes through the page cache

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        for fd in {self._fd, self._buffered} - {-1}:
            os.close(fd)
        self._fd = self._buffered = -1
