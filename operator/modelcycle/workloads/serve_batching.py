"""Adaptive micro-batching: concurrent requests share one predict call.

Requests are validated before they get here, so a malformed request never joins a batch. The
batcher runs one batch at a time (in a worker thread, or inline on the event loop); while a batch
runs, new requests queue up and form the next batch, so batches grow with the load without any
fixed wait. Before dispatching, the batcher yields to the event loop for as long as each pass
brings new requests, bounded by `max_delay` after the oldest request arrived and by
`max_batch_size` rows, so requests already on the wire join too; an idle server answers a lone
request at once. If a batched predict raises, each request of the batch is predicted on its own,
so only the requests that fail themselves get an error.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Prediction = tuple[NDArray[Any], NDArray[np.float64] | None]
Outcome = Prediction | BaseException
PredictFn = Callable[[Any, bool], Prediction]
BatchHook = Callable[[Any, NDArray[Any]], None]
TRICKLE_WAIT = 0.0002
"""Seconds the batcher waits for one more request of a trickling transport (see `Job.trickles`)."""


@dataclass(eq=False)
class Job:
    """One request's rows and what to do with its outcome (called on the event loop thread)."""

    x: Any
    rows: int
    wants_proba: bool
    done: Callable[[Outcome], None]
    arrived: float = field(default_factory=time.monotonic)
    trickles: bool = False
    """From a transport whose concurrent requests reach the loop one by one (gRPC: its poller
    thread hands them over), so an empty pass of the loop does not mean no batch-mate is coming."""


def _concat(parts: list[Any]) -> Any:
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts, axis=0)
    import pandas as pd

    return pd.concat(parts, ignore_index=True)


class MicroBatcher:
    """Gathers jobs into batches of at most `max_batch_size` rows and runs them one at a time."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 64,
        max_delay: float = 0.002,
        executor: Executor | None = None,
        on_batch: BatchHook | None = None,
        on_dispatch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay = max(0.0, max_delay)
        self.executor = executor
        self.on_batch = on_batch
        self.on_dispatch = on_dispatch
        self.queue: deque[Job] = deque()
        self.queued_rows = 0
        self.in_flight = 0
        self.last_batch_jobs = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run_forever(), name="micro-batcher")

    def submit(self, job: Job) -> None:
        if self._closing:
            job.done(RuntimeError("the server is shutting down"))
            return
        self.queue.append(job)
        self.queued_rows += job.rows
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def close(self) -> None:
        """Finish every queued job, then stop."""
        self._closing = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._task is not None:
            await self._task

    # ------------------------------------------------------------------ the loop

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.max_delay <= 0:
            return
        deadline = self.queue[0].arrived + self.max_delay
        while self.queued_rows < self.max_batch_size and time.monotonic() < deadline:
            seen = len(self.queue)
            await asyncio.sleep(0)
            if len(self.queue) > seen:
                continue
            if not (self.queue[0].trickles and self.last_batch_jobs > 1):
                return
            # Under concurrent load from a trickling transport: let the loop block briefly (which
            # also hands the GIL to the thread delivering requests), then stop if nothing came.
            await asyncio.sleep(min(TRICKLE_WAIT, max(0.0, deadline - time.monotonic())))
            if len(self.queue) == seen:
                return

    def _take(self) -> list[Job]:
        batch = [self.queue.popleft()]
        rows = batch[0].rows
        while self.queue and rows + self.queue[0].rows <= self.max_batch_size:
            job = self.queue.popleft()
            rows += job.rows
            batch.append(job)
        self.queued_rows -= rows
        return batch

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                if self._closing:
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            await self._gather(loop)
            batch = self._take()
            self.last_batch_jobs = len(batch)
            if self.on_dispatch is not None:
                self.on_dispatch(len(batch), sum(j.rows for j in batch))
            self.in_flight = len(batch)
            if self.executor is None:
                outcomes = self.run_batch(batch)
            else:
                try:
                    outcomes = await loop.run_in_executor(self.executor, self.run_batch, batch)
                except BaseException as exc:  # executor shut down, cancelled: fail the batch, not the loop
                    outcomes = [exc] * len(batch)
            self.in_flight = 0
            for job, outcome in zip(batch, outcomes, strict=True):
                try:
                    job.done(outcome)
                except Exception:  # a broken callback must not stop the batcher
                    import logging

                    logging.getLogger(__name__).exception("inference callback failed")

    # ------------------------------------------------------------------ predicting

    def _predict_one(self, job: Job) -> Outcome:
        try:
            result = self.predict(job.x, job.wants_proba)
        except Exception as exc:
            return exc
        if self.on_batch is not None:
            self._hook(job.x, result[0])
        return result

    def _hook(self, x: Any, predictions: NDArray[Any]) -> None:
        try:
            if self.on_batch is not None:
                self.on_batch(x, predictions)
        except Exception:  # statistics must never fail a prediction
            import logging

            logging.getLogger(__name__).exception("live statistics update failed")

    def run_batch(self, batch: list[Job]) -> list[Outcome]:
        """Predict a batch in one call; on failure, each job alone (its error stays its own)."""
        if len(batch) == 1:
            return [self._predict_one(batch[0])]
        wants_proba = any(j.wants_proba for j in batch)
        try:
            x = _concat([j.x for j in batch])
            predictions, probabilities = self.predict(x, wants_proba)
            if len(predictions) != len(x):
                raise ValueError("the model returned a wrong number of predictions")
        except Exception:
            return [self._predict_one(j) for j in batch]
        if self.on_batch is not None:
            self._hook(x, predictions)
        outcomes: list[Outcome] = []
        start = 0
        for job in batch:
            end = start + job.rows
            outcomes.append(
                (predictions[start:end], None if probabilities is None else probabilities[start:end])
            )
            start = end
        return outcomes
