"""Dynamic micro-batching: requests arrive one by one, the model sees them in batches.

One worker thread owns the model. It blocks for the first waiting item, then gathers more until
it holds ``max_batch`` items or ``max_wait_ms`` has passed since the first, runs them in one call,
and hands each caller its own result. Under light load a request waits at most ``max_wait_ms``;
under heavy load batches fill at once and throughput grows with the batch. The event loop never
runs the model: callers ``await`` a future the worker resolves (hand-written because neither
FastAPI nor Starlette offers request batching).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_STOP = object()


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    loop: asyncio.AbstractEventLoop


class MicroBatcher(Generic[Item, Result]):
    """``await batcher.submit(item)``: ``run_batch`` sees up to ``max_batch`` items per call.

    ``run_batch`` returns one result per item, in order; an exception in the list fails only its
    own caller, an exception raised fails the whole batch. ``on_batch(size)`` observes batch sizes.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
        name: str = "inference",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: queue.Queue[object] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def submit(self, item: Item) -> Result:
        if self._closed.is_set():
            raise BatcherClosedError("the inference worker has stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.put(_Pending(item, future, loop))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand; items still queued fail with :class:`BatcherClosedError`."""
        self._closed.set()
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _gather(self, first: _Pending[Item, Result]) -> list[_Pending[Item, Result]]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                self._queue.put(_STOP)  # seen again by the loop once this batch is done
                break
            batch.append(entry)  # type: ignore[arg-type]
        return batch

    def _work(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                self._drain()
                return
            batch = self._gather(entry)  # type: ignore[arg-type]
            try:
                if self.on_batch is not None:
                    self.on_batch(len(batch))
                results: Sequence[Result | BaseException] = self.run_batch([p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            except Exception as error:  # the batch failed as a whole: every caller hears why
                results = [error] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                _deliver(pending, result)

    def _drain(self) -> None:
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
            if entry is not _STOP:
                _deliver(entry, BatcherClosedError("the service is shutting down"))  # type: ignore[arg-type]


class BatcherClosedError(RuntimeError):
    """Submitted after (or while) the batcher stopped: the service is shutting down."""


def _deliver(pending: _Pending[Item, Result], result: Result | BaseException) -> None:
    # RuntimeError: the caller's event loop has closed, so nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        pending.loop.call_soon_threadsafe(_settle, pending.future, result)


def _settle(future: asyncio.Future[Result], result: Result | BaseException) -> None:
    if future.done():  # the caller went away (client disconnected)
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
