"""Dynamic micro-batching: the inputs of concurrent embeddings jobs on one worker share model calls.

A model call costs a fixed part (about as much as ten tokens of compute on this model) plus a part per padded
token, so for short inputs most of an unbatched call is the fixed part. Concurrent callers' inputs are gathered
(for at most ``max_wait`` after the first arrives, or until ``max_batch`` inputs are waiting; at most
``max_batch_tokens`` tokens) and computed together: sorted by length, and cut into runs of similar length where
the padding saved outweighs one more call's fixed cost, so one 256-token input does not pad 60 short ones.

The model runs on one dedicated thread, one call at a time, so the event loop (bus I/O, heartbeats, cancels)
keeps running while it computes; onnxruntime releases the GIL.

Fairness: a caller with more inputs than fit a batch is served in several model calls and goes to the back of
the queue after each one (behind callers that arrived while it computed), so a 2048-input job does not hold up
single-string jobs for its whole duration.

Cancel-safety: a caller cancelled before its inputs are taken into a batch has them dropped; one cancelled while
its batch computes only loses its result. A model error fails the callers of that batch and nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

# No wait by default: under load, batches form from what arrives while the model computes, so the wait never
# applies where throughput matters; below that load the model has room, and a wait would only add latency (a lone
# request pays it in full, plus the event loop's timer resolution: uvloop's clock ticks in milliseconds). A short
# wait (EMBEDDINGS_BATCH_WAIT_MS) saves model calls at moderate load: CPU per request fell ~15% at 1 ms under
# random arrivals at 100/s (tools/bench_embeddings_inprocess.py --open-rps).
DEFAULT_MAX_WAIT = 0.0
DEFAULT_MAX_BATCH = 64
# Bounds the compute of one batch (all-MiniLM-L6-v2 int8 on one core: about 0.3 ms a token), which is how long a
# caller arriving just after it starts may wait for the thread; the fixed cost per call stays ~1% of it.
DEFAULT_MAX_BATCH_TOKENS = 1024
# The fixed cost of one model call in tokens' worth of compute (measured: ~3 ms fixed, ~0.3 ms per token).
CALL_COST_TOKENS = 10


class Embedder(Protocol):
    """What the batcher needs of a model (:class:`services.embeddings_worker.local_model.LocalModel` is one)."""

    @property
    def dimensions(self) -> int: ...

    @property
    def context_tokens(self) -> int: ...

    def embed(self, batch: list[list[int]]) -> Vectors: ...


class BatcherClosed(RuntimeError):
    """The batcher was closed before this caller's inputs were embedded."""


class _Request:
    """One caller's inputs, shortest first, and where their vectors go."""

    __slots__ = ("cursor", "future", "ids", "order", "out", "pending")

    def __init__(self, ids: list[list[int]], dimensions: int, future: asyncio.Future[Vectors]) -> None:
        # Shortest first so each model call takes inputs of similar length from a large request.
        self.order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        self.ids = [ids[i] for i in self.order]
        self.cursor = 0  # inputs before this have been taken into a model call
        self.pending = len(ids)  # inputs whose vectors have not arrived yet
        self.out: Vectors = np.empty((len(ids), dimensions), dtype=np.float32)
        self.future = future


class MicroBatcher:
    """Gathers the inputs of concurrent :meth:`embed` calls into bounded model calls on one thread."""

    def __init__(
        self,
        model: Embedder,
        *,
        batching: bool = True,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be >= 1 and max_wait >= 0")
        if max_batch_tokens < model.context_tokens:
            raise ValueError(f"max_batch_tokens must hold one input of {model.context_tokens} tokens")
        self.model = model
        self.batching = batching
        self.max_wait = max_wait
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self._queue: deque[_Request] = deque()
        self._queued_inputs = 0  # inputs not yet taken into a batch (cancelled ones included until skipped)
        self._wake: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings-model")
        self._closed = False
        self._first_arrival = 0.0

    async def embed(self, ids: list[list[int]]) -> Vectors:
        """Vectors [len(ids), dimensions] for checked token arrays, in input order."""
        if self._closed:
            raise BatcherClosed("the embeddings batcher is closed")
        if self._runner is not None and self._runner.done():
            raise RuntimeError("the embeddings batcher failed and no longer runs")
        if not ids:
            return np.empty((0, self.model.dimensions), dtype=np.float32)
        limit = self.model.context_tokens
        if max(map(len, ids)) > limit:
            # Refused here, not in the model call, so one bad input cannot fail the other callers of its batch.
            index = next(i for i, array in enumerate(ids) if len(array) > limit)
            raise ValueError(f"input[{index}] has {len(ids[index])} tokens; this model takes at most {limit}")
        loop = asyncio.get_running_loop()
        if self._runner is None:
            self._wake = asyncio.Event()
            self._full = asyncio.Event()
            self._runner = loop.create_task(self._run(), name="embeddings-batcher")
            self._runner.add_done_callback(self._runner_ended)
        assert self._wake is not None and self._full is not None
        request = _Request(ids, self.model.dimensions, loop.create_future())
        if not self._queue:
            self._first_arrival = loop.time()  # the bounded wait counts from here
        self._queue.append(request)
        self._queued_inputs += len(ids)
        self._wake.set()
        if self._queued_inputs >= self.max_batch:
            self._full.set()
        # Cancelling the caller cancels this future; the runner then skips the request's remaining inputs.
        return await request.future

    async def close(self) -> None:
        """Stop: waiting callers get :class:`BatcherClosed`; a model call in progress finishes on its thread."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._fail_queued(BatcherClosed("the embeddings batcher is closed"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the runner task ------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None and self._full is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if self.batching and self.max_wait > 0 and self._queued_inputs < self.max_batch:
                # Bounded wait from the first arrival: concurrent callers join until it expires or a batch fills.
                # Inputs that queued up during the previous model call have waited already and go at once.
                remaining = self._first_arrival + self.max_wait - loop.time()
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), remaining)
            batch, unfinished = self._take()
            if batch:
                await self._compute(loop, batch)
            # A caller split across model calls rejoins at the back only now, behind whoever arrived meanwhile.
            for request in unfinished:
                if request.future.done():  # cancelled or failed meanwhile: its remaining inputs are dropped
                    self._queued_inputs -= len(request.ids) - request.cursor
                else:
                    self._queue.append(request)
            if not self._queue:
                self._wake.clear()
            if self._queued_inputs < self.max_batch:
                self._full.clear()

    def _take(self) -> tuple[list[tuple[_Request, int, int]], list[_Request]]:
        """Slices (request, start, stop) for the next model call, within max_batch and max_batch_tokens, and the
        requests (batching only) that have inputs left after it, taken out of the queue until it is computed."""
        batch: list[tuple[_Request, int, int]] = []
        rows = 0
        tokens = 0
        requeue: list[_Request] = []
        while self._queue and rows < self.max_batch:
            request = self._queue[0]
            if request.future.done():  # cancelled (or failed) while waiting: its inputs are dropped
                self._queue.popleft()
                self._queued_inputs -= len(request.ids) - request.cursor
                continue
            start = stop = request.cursor
            while stop < len(request.ids) and rows < self.max_batch:
                length = len(request.ids[stop])
                if rows and tokens + length > self.max_batch_tokens:
                    break
                rows += 1
                tokens += length
                stop += 1
            if stop > start:
                batch.append((request, start, stop))
                request.cursor = stop
                self._queued_inputs -= stop - start
            if request.cursor == len(request.ids):
                self._queue.popleft()
            elif self.batching:
                self._queue.popleft()
                requeue.append(request)
            if not self.batching or requeue:
                break  # unbatched: one caller per model call, and an unfinished one keeps its place at the front
        return batch, requeue

    async def _compute(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[_Request, int, int]]) -> None:
        inputs = [ids for request, start, stop in batch for ids in request.ids[start:stop]]
        # Shortest first across callers, then cut into runs that each pad to their own longest input.
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        sorted_inputs = [inputs[i] for i in order]
        try:
            vectors = await loop.run_in_executor(self._executor, self._embed_runs, sorted_inputs)
        except asyncio.CancelledError:
            # close() while computing: these callers would otherwise wait forever.
            for request, _, _ in batch:
                if not request.future.done():
                    request.future.set_exception(BatcherClosed("the embeddings batcher closed during its model call"))
            raise
        except Exception as exc:  # the model failed: exactly this batch's callers hear it
            for request, _, _ in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        try:
            unsorted = np.empty_like(vectors)
            unsorted[order] = vectors
            offset = 0
            for request, start, stop in batch:
                count = stop - start
                if not request.future.done():  # a caller cancelled mid-compute just loses its result
                    request.out[request.order[start:stop]] = unsorted[offset : offset + count]
                    request.pending -= count
                    if request.pending == 0:
                        request.future.set_result(request.out)
                offset += count
        except BaseException as exc:  # a bug here must not leave this batch's callers waiting forever
            for request, _, _ in batch:
                if not request.future.done():
                    request.future.set_exception(RuntimeError(f"the embeddings batcher failed: {exc!r}"))
            raise

    def _embed_runs(self, inputs: list[list[int]]) -> Vectors:
        """On the model thread: one model call per run of similar length (``inputs`` shortest first)."""
        cuts = length_runs([len(ids) for ids in inputs])
        if len(cuts) == 1:
            return self.model.embed(inputs)
        starts = [0, *cuts[:-1]]
        return np.concatenate([self.model.embed(inputs[a:b]) for a, b in zip(starts, cuts, strict=True)])

    def _runner_ended(self, task: asyncio.Task[None]) -> None:
        # The runner only ends by close() or by a bug; either way nobody may be left waiting.
        if not task.cancelled() and task.exception() is not None:
            self._fail_queued(RuntimeError(f"the embeddings batcher failed: {task.exception()!r}"))

    def _fail_queued(self, exc: Exception) -> None:
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(exc)
        self._queued_inputs = 0


def length_runs(lengths: list[int], call_cost: int = CALL_COST_TOKENS) -> list[int]:
    """End indices of the runs that minimise padded tokens + ``call_cost`` per run, for ascending ``lengths``.

    A run pads to its last (longest) input, so its cost is ``call_cost + rows * last length``. Cutting between
    equal lengths never helps, so the exact minimum is a dynamic programme over the distinct lengths (k <= n).
    """
    ends: list[int] = []  # index after the last input of each distinct length
    for index in range(1, len(lengths) + 1):
        if index == len(lengths) or lengths[index] != lengths[index - 1]:
            ends.append(index)
    best = [0] * (len(ends) + 1)  # best[g]: cheapest cost of the inputs before ends[g - 1]
    cut = [0] * (len(ends) + 1)  # cut[g]: the group where the last run of that cheapest split starts
    for group in range(1, len(ends) + 1):
        stop, width = ends[group - 1], lengths[ends[group - 1] - 1]
        best[group], cut[group] = min(
            (best[first] + call_cost + (stop - (ends[first - 1] if first else 0)) * width, first)
            for first in range(group)
        )
    runs: list[int] = []
    group = len(ends)
    while group > 0:
        runs.append(ends[group - 1])
        group = cut[group]
    return runs[::-1]
