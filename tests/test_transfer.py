"""transfer.Pipeline and FileSink: every byte, in order, through threads, in constant memory."""

from __future__ import annotations

import hashlib
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
    pipeline = Pipeline([digest.update, sink.write], buffers=2, size=SIZE)
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
        sink.write(view)
        sink.write(view)  # after an unaligned write the rest goes through the page cache
    sink.fsync()
    sink.close()
    assert (tmp_path / "out").read_bytes() == data + data


def test_file_sink_never_replaces_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        FileSink(tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"keep"
