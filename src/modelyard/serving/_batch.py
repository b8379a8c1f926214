"""Adaptive batching: the records of the requests that arrive while a prediction runs are
predicted together, in one call.

For a small model most of a prediction is the library's per-call work (validation, a
DataFrame built, dispatch), not the rows: sixteen one-row requests cost about one
sixteen-row call. The prediction runs on a worker thread, so the event loop goes on
reading requests meanwhile; those form the next batch. A lone request waits for nothing
(it is a batch of one). Requests are grouped by the model they started on, so a swap
mid-batch changes nothing for them. If a batch fails, or its answer cannot be split row
by row, each request is predicted alone: one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
from itertools import groupby
from typing import Any

from modelyard.serving._follower import Served

MAX_ROWS = 1024  # rows in one call at most; the rest wait for the next


Waiting = tuple[Served, list[dict[str, Any]], "asyncio.Future[Any]"]


class Batcher:
    def __init__(self) -> None:
        self._pending: list[Waiting] = []
        self._draining = False

    async def predict(self, served: Served, records: list[dict[str, Any]]) -> Any:
        """``served``'s predictions for ``records``, computed with whatever else is waiting."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((served, records, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch: list[Waiting] = []
                rows = 0
                while self._pending and (not batch or rows + len(self._pending[0][1]) <= MAX_ROWS):
                    item = self._pending.pop(0)
                    batch.append(item)
                    rows += len(item[1])
                for _, group in groupby(batch, key=lambda item: id(item[0])):
                    await _predict_together(list(group))
        finally:
            self._draining = False


async def _predict_together(group: list[Waiting]) -> None:
    predictor = group[0][0].predictor
    if len(group) > 1:
        rows = [row for _, records, _ in group for row in records]
        try:
            result = await asyncio.to_thread(predictor.predict, rows)
        except Exception:
            result = None  # someone's input is bad: each alone below, to tell whose
        if hasattr(result, "to_numpy"):  # pandas: sliced by position, as arrays are
            result = result.to_numpy()
        if result is not None and _splits(result, len(rows)):
            start = 0
            for _, records, future in group:
                _settle(future, result=result[start : start + len(records)])
                start += len(records)
            return
    for _, records, future in group:
        try:
            _settle(future, result=await asyncio.to_thread(predictor.predict, records))
        except Exception as exc:
            _settle(future, error=exc)


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # its request was cancelled (the client went away)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _splits(result: Any, rows: int) -> bool:
    """Whether the answer is one prediction per row, in order (an array or a list)."""
    try:
        return len(result) == rows
    except TypeError:
        return False
