"""Micro-batching: the examples of concurrent requests go through the model together, one batch at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from transferlab.data import Examples

__all__ = ["MicroBatcher", "concat_examples"]

log = logging.getLogger("transferlab")


def concat_examples(parts: list[Examples]) -> Examples:
    """The examples of ``parts`` (unlabeled, of one type) as one container, in order."""
    first = parts[0]
    if len(parts) == 1:
        return first
    joined = {}
    for name in first.per_example:
        values = [getattr(part, name) for part in parts]
        joined[name] = None if all(value is None for value in values) else [v for value in values for v in value]
    return dataclasses.replace(first, name=f"{len(parts)} requests", **joined)


@dataclass
class _Pending:
    examples: Examples
    future: asyncio.Future


class MicroBatcher:
    """Collects the examples of concurrent requests and predicts them in batches of at most ``max_batch`` examples.

    Once a request arrives, the batcher waits ``batch_wait`` seconds for more (or until ``max_batch`` examples are
    queued), runs ``predict`` on all of them in a worker thread, and hands each request its own rows. When the call
    fails, the batch is halved and each half run again, down to the request that fails, which gets the error. One
    batch runs at a time, so the model is never called concurrently. A request larger than ``max_batch`` runs alone,
    split into calls of at most ``max_batch`` examples: no call of ``predict`` ever gets more. Requests that timed
    out meanwhile are skipped.

    Args:
        predict: ``Examples -> rows``, one row per example (e.g. an engine's ``predict``).
        max_batch: examples per call of ``predict``.
        batch_wait: seconds to wait for more requests after the first.
    """

    def __init__(self, predict: Callable[[Examples], list[dict]], max_batch: int, batch_wait: float):
        self.predict = predict
        self.max_batch = max_batch
        self.batch_wait = batch_wait
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.batches = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, examples: Examples) -> list[dict]:
        """The rows of ``examples``, predicted in a batch with whatever else is queued."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(examples, future))
        return await future

    async def _loop(self) -> None:
        carried: _Pending | None = None
        while True:
            first = carried or await self.queue.get()
            carried = None
            batch, size = [first], len(first.examples)
            deadline = asyncio.get_running_loop().time() + self.batch_wait
            while size < self.max_batch:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    pending = await asyncio.wait_for(self.queue.get(), timeout=max(remaining, 0)) \
                        if remaining > 0 else self.queue.get_nowait()
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(pending.examples) > self.max_batch:
                    carried = pending
                    break
                batch.append(pending)
                size += len(pending.examples)
            await self._run(batch)

    def _predict_in_chunks(self, examples: Examples) -> list[dict]:
        if len(examples) <= self.max_batch:
            return self.predict(examples)
        rows = []
        for start in range(0, len(examples), self.max_batch):
            rows += self.predict(examples.subset(range(start, min(start + self.max_batch, len(examples)))))
        return rows

    async def _run(self, batch: list[_Pending]) -> None:
        live = [pending for pending in batch if not pending.future.done()]  # timed-out requests are skipped
        if not live:
            return
        self.batches += 1
        try:
            rows = await asyncio.to_thread(self._predict_in_chunks, concat_examples([p.examples for p in live]))
        except Exception as exc:  # noqa: BLE001 - handed to the requests, each on its own
            if len(live) > 1:  # one request's bad file must not fail the others: halve the batch until it is found
                half = len(live) // 2  # (log2 of the batch size in extra calls, not one per request: fewer time out)
                await self._run(live[:half])
                await self._run(live[half:])
                return
            if not live[0].future.done():
                live[0].future.set_exception(exc)
            return
        start = 0
        for pending in live:
            end = start + len(pending.examples)
            if not pending.future.done():
                pending.future.set_result(rows[start:end])
            start = end
