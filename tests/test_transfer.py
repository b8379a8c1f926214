"""transfer.Pipeline and FileSink: every byte, in order, through threads, in constant memory."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from modelyard.transfer import DIRECT_ALIGN, FileSink, Pipeline

SIZE = 64 * 1024  # small pool buffers, so a few hundred KiB crosses many of them
DATA = os.urandom(7 * SIZE + 12345)  # not a multiple of the buffer or the O_DIRECT block


def test_every_byte_reaches_every_step_in_order(tmp_path: Path) -> None:
    digest = hashlib.sha256()
    sink = FileSink(tmp_path / "out")
    pipeline = Pipeline([digest.update], writer=sink.write_at, buffers=3, size=SIZE)
    for i in range(0, len(DATA), 1000):  # network-sized pieces, across buffer boundaries
        pipeline.write(DATA[i : i + 1000])
    pipeline.close()
    sink.close()
    assert digest.hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert (tmp_path / "out").read_bytes() == DATA


def test_a_stream_that_fits_one_buffer_runs_on_the_callers_thread() -> None:
    threads: list[threading.Thread] = []
    pipeline = Pipeline([lambda _: threads.append(threading.current_thread())], size=SIZE)
    pipeline.write(b"small")
    pipeline.close()
    assert threads == [threading.current_thread()]


def test_a_failing_step_is_raised_to_the_writer_which_never_blocks() -> None:
    seen: list[bytes] = []

    def fail(view: memoryview) -> None:
        raise OSError(28, "No space left on device")

    pipeline = Pipeline([fail, lambda view: seen.append(bytes(view))], buffers=2, size=SIZE)
    with pytest.raises(OSError, match="No space"):
        for _ in range(100):  # far more than the pool holds: blocks for ever if buffers leak
            pipeline.write(DATA)
    with pytest.raises(OSError, match="No space"):
        pipeline.close()
    assert seen == []  # later steps never see a buffer the failed step did not process


def test_abort_stops_every_thread_without_raising() -> None:
    pipeline = Pipeline([lambda view: None], buffers=2, size=SIZE)
    pipeline.write(DATA)
    pipeline.abort()
    assert not [t for t in threading.enumerate() if t.name == "modelyard-transfer"]


@pytest.mark.parametrize("size", [0, 1, DIRECT_ALIGN - 1, DIRECT_ALIGN, 3 * DIRECT_ALIGN + 7])
def test_file_sink_writes_aligned_and_unaligned_lengths(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    sink = FileSink(tmp_path / "out")
    with memoryview(data) as view:
        sink.write_at(view, 0)
        sink.write_at(view, size)  # an unaligned offset goes through the page cache
    sink.fsync()
    sink.close()
    assert (tmp_path / "out").read_bytes() == data + data


def test_file_sink_never_replaces_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        FileSink(tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"keep"


def test_writers_put_every_buffer_at_its_offset_from_several_threads(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "out")
    threads: set[str] = set()

    def write_at(view: memoryview, offset: int) -> None:
        threads.add(threading.current_thread().name + str(threading.get_ident()))
        sink.write_at(view, offset)

    digest = hashlib.sha256()
    pipeline = Pipeline([digest.update], writer=write_at, writers=3, buffers=5, size=SIZE)
    pipeline.write(DATA)
    pipeline.close()
    sink.close()
    assert (tmp_path / "out").read_bytes() == DATA  # out of order, but each at its place
    assert digest.hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert len(threads) > 1


def test_a_failing_writer_is_raised_and_frees_the_pool() -> None:
    def full(view: memoryview, offset: int) -> None:
        raise OSError(28, "No space left on device")

    pipeline = Pipeline([lambda view: None], writer=full, buffers=2, size=SIZE)
    with pytest.raises(OSError, match="No space"):
        for _ in range(100):  # blocks for ever if a failed writer kept its buffers
            pipeline.write(DATA)
    with pytest.raises(OSError, match="No space"):
        pipeline.close()
    assert not [t for t in threading.enumerate() if t.name == "modelyard-transfer"]


def test_receive_reads_straight_into_the_pool_up_to_its_limit() -> None:
    source = io.BytesIO(DATA + b"the next request")  # what follows the body is not read
    reads: list[int] = []

    def read(view: memoryview) -> int:
        n = source.readinto(view[:5000])  # a socket: short reads, across buffer boundaries
        reads.append(n)
        return n

    digest = hashlib.sha256()
    pipeline = Pipeline([digest.update], buffers=2, size=SIZE)
    assert pipeline.receive(read, len(DATA)) == len(DATA)
    pipeline.close()
    assert digest.hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert source.read() == b"the next request"
    assert max(reads) == 5000 and len(reads) > len(DATA) // SIZE


def test_receive_stops_at_the_end_of_what_there_is() -> None:
    source = io.BytesIO(DATA[:1000])
    seen: list[bytes] = []
    pipeline = Pipeline([lambda view: seen.append(bytes(view))], size=SIZE)
    assert pipeline.receive(source.readinto, len(DATA)) == 1000
    pipeline.close()
    assert b"".join(seen) == DATA[:1000]
