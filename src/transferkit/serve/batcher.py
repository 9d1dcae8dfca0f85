"""Dynamic batching: concurrent requests are merged into model batches under a token budget.

Requests wait in a bounded queue (counted in inputs). The model runs one batch at a time in a worker thread,
so while it runs the next requests gather: a busy service fills its batches up to `max_batch_tokens`; an idle
one waits up to `max_wait_ms` for others to join the first request only while requests arrive closer together
than that (a lone client is answered at once). Each request gets back exactly its own predictions, in order;
the predictions of an input do not depend on what else was in its batch (inputs are scored independently,
padding masked). A full queue refuses new work at once (QueueFull -> 429) instead of piling up timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from transferkit.serve.metrics import ServiceMetrics
from transferkit.serve.models import ModelHolder

log = logging.getLogger("transferkit.serve")


class QueueFull(Exception):
    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(f"the service is at capacity ({waiting} inputs queued, limit {limit}); retry shortly")


class Draining(Exception):
    pass


def estimate_tokens(item: Any) -> int:
    """Tokens an input will take, from its characters (about 4 per token for English WordPiece, fewer per
    Chinese character: 1 per character is the safe side), plus [CLS]/[SEP]."""
    if isinstance(item, dict):
        text = " ".join(str(v) for v in item.values() if isinstance(v, str))
    else:
        text = str(item)
    wide = sum(1 for c in text if ord(c) > 0x2E80)
    return 2 + wide + (len(text) - wide) // 4 + 1


@dataclass
class Job:
    items: list[Any]
    pairs: list[str] | None
    tokens: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    abandoned: bool = False


class Batcher:
    def __init__(self, holder: ModelHolder, metrics: ServiceMetrics, *, max_queue: int, max_batch_tokens: int,
                 max_batch_inputs: int, max_wait_ms: float, batch_size: int) -> None:
        self.holder, self.metrics = holder, metrics
        self.max_queue, self.max_tokens, self.max_inputs = max_queue, max_batch_tokens, max_batch_inputs
        self.max_wait = max_wait_ms / 1000
        self.batch_size = batch_size
        self.jobs: deque[Job] = deque()
        self.waiting = 0  # inputs queued
        self.draining = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-model")
        self.batches = 0
        self._last_arrival = float("-inf")
        self._gap = float("inf")  # seconds between the last two arrivals

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Answer what is queued, then stop."""
        self.draining = True
        while self.jobs:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def on_model_thread(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """Run `fn` on the one thread that runs the model, between prediction batches: work that hooks or
        reconfigures the model (attributions) never overlaps a batch, and tokenizers are not shared across
        threads."""
        if self.draining:
            raise Draining()
        import functools

        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kw))

    async def submit(self, items: list[Any], pairs: list[str] | None,
                     timeout: float) -> tuple[list[dict[str, Any]], str]:
        """The predictions for `items` and the version of the model that made them."""
        if self.draining:
            raise Draining()
        if self.waiting + len(items) > self.max_queue:
            raise QueueFull(self.waiting, self.max_queue)
        job = Job(items, pairs, sum(estimate_tokens(x) for x in items), asyncio.get_running_loop().create_future())
        self._gap, self._last_arrival = job.enqueued - self._last_arrival, job.enqueued
        self.jobs.append(job)
        self.waiting += len(items)
        self.metrics.queue.set(self.waiting)
        assert self._wake is not None
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            job.abandoned = True  # not run if it has not started; its answer is dropped if it has
            raise

    def _take(self) -> list[Job]:
        """The next batch: jobs in arrival order while the token and input budgets hold (at least one job;
        jobs with text pairs and without are not mixed)."""
        batch: list[Job] = []
        tokens = inputs = 0
        while self.jobs:
            job = self.jobs[0]
            if job.abandoned:
                self.jobs.popleft()
                self._dequeued(job)
                continue
            fits = tokens + job.tokens <= self.max_tokens and inputs + len(job.items) <= self.max_inputs
            same_kind = not batch or (job.pairs is None) == (batch[0].pairs is None)
            if batch and not (fits and same_kind):
                break
            batch.append(self.jobs.popleft())
            self._dequeued(job)
            tokens += job.tokens
            inputs += len(job.items)
        return batch

    def _dequeued(self, job: Job) -> None:
        self.waiting -= len(job.items)
        self.metrics.queue.set(self.waiting)

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self.jobs:
                self._wake.clear()
                await self._wake.wait()
            # an idle model: give concurrent requests a moment to join the first one, when requests are arriving
            # closer together than that moment (a lone client would only lose the wait)
            first = self.jobs[0] if self.jobs else None
            if first is not None and self.max_wait > 0 and self._gap < self.max_wait:
                left = self.max_wait - (time.perf_counter() - first.enqueued)
                if left > 0 and sum(j.tokens for j in self.jobs) < self.max_tokens:
                    await asyncio.sleep(left)
            batch = self._take()
            if not batch:
                continue
            model = self.holder.current  # this batch finishes on this model, even if a swap happens meanwhile
            items = [x for j in batch for x in j.items]
            pairs = [p for j in batch for p in (j.pairs or [])] if batch[0].pairs is not None else None
            try:
                preds = await loop.run_in_executor(self._pool, self._predict, model.predictor, items, pairs)
            except Exception as e:  # noqa: BLE001 - a failure answers the batch's requests, never kills the loop
                log.exception("model batch failed")
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.batches += 1
            self.metrics.batch_inputs.observe(len(items))
            self.metrics.batch_requests.observe(len(batch))
            start = 0
            for j in batch:
                mine = preds[start:start + len(j.items)]
                start += len(j.items)
                for p in mine:
                    label = p.get("label") if isinstance(p, dict) else None
                    if isinstance(label, str):
                        self.metrics.labels.labels(label=label).inc()
                if not j.future.done():
                    j.future.set_result((mine, model.version))

    def _predict(self, predictor: Any, items: list[Any], pairs: list[str] | None) -> list[dict[str, Any]]:
        return predictor.predict(items, pairs, batch_size=self.batch_size)
