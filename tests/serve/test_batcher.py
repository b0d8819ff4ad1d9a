"""Micro-batching: batches fill under load, single requests do not wait long, errors stay local."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from defectkit.serve.batcher import BatcherClosedError, MicroBatcher


def test_batches_fill_under_load_and_results_stay_in_order() -> None:
    sizes: list[int] = []
    lock = threading.Lock()

    def double(items: Sequence[int]) -> list[int]:
        time.sleep(0.01)  # a model call: requests pile up meanwhile
        return [2 * i for i in items]

    def seen(size: int) -> None:
        with lock:
            sizes.append(size)

    batcher: MicroBatcher[int, int] = MicroBatcher(double, max_batch=8, max_wait_ms=20, on_batch=seen)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(40))))

    try:
        assert asyncio.run(main()) == [2 * i for i in range(40)]
    finally:
        batcher.close()
    assert sum(sizes) == 40 and max(sizes) == 8 and len(sizes) <= 10


def test_a_lone_request_waits_at_most_max_wait() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: list(items), max_batch=64, max_wait_ms=30)

    async def main() -> float:
        started = time.perf_counter()
        assert await batcher.submit(7) == 7
        return time.perf_counter() - started

    try:
        assert asyncio.run(main()) < 1.0  # generous: 30 ms plus scheduling on a busy machine
    finally:
        batcher.close()


def test_item_errors_fail_one_caller_and_batch_errors_fail_all() -> None:
    def picky(items: Sequence[int]) -> list[int | BaseException]:
        if 99 in items:
            raise RuntimeError("model crashed")
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(picky, max_batch=4, max_wait_ms=20)

    async def main() -> list[int | BaseException]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in (1, -2, 3)), return_exceptions=True))

    try:
        first = asyncio.run(main())
        assert first[0] == 1 and first[2] == 3 and isinstance(first[1], ValueError)

        async def crash() -> None:
            await batcher.submit(99)

        with pytest.raises(RuntimeError, match="model crashed"):
            asyncio.run(crash())
        assert asyncio.run(main())[0] == 1  # the worker survived the crash
    finally:
        batcher.close()


def test_submit_after_close_fails_fast() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: list(items))
    batcher.close()

    async def late() -> int:
        return await batcher.submit(1)

    with pytest.raises(BatcherClosedError):
        asyncio.run(late())
