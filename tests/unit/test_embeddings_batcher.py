"""The embeddings micro-batcher on the real model: sharing model calls, bounds, the loop staying live, cancels
and errors confined to their callers."""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import threading
from collections.abc import Awaitable, Callable
from typing import ParamSpec

import numpy as np
import numpy.typing as npt
import pytest

from services.embeddings_worker.batcher import BatcherClosed, MicroBatcher, length_runs
from services.embeddings_worker.local_model import LocalModel

POISON = 1999  # a valid token id on which the wrapped model raises, for the error tests


P = ParamSpec("P")


def bounded(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Fail instead of hanging when a caller is never answered."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        async with asyncio.timeout(30):
            await test(*args, **kwargs)

    return run


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return LocalModel.load()


class Recorder:
    """The real model, counting and recording its calls; can hold a call at its start and fail on POISON."""

    def __init__(self, model: LocalModel, loop: asyncio.AbstractEventLoop) -> None:
        self.model = model
        self.loop = loop
        self.calls: list[list[list[int]]] = []
        self.entered = asyncio.Event()  # set (on the loop) when a call starts
        self.gate = threading.Event()
        self.gate.set()

    @property
    def dimensions(self) -> int:
        return self.model.dimensions

    @property
    def context_tokens(self) -> int:
        return self.model.context_tokens

    def embed(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        self.calls.append(batch)
        self.loop.call_soon_threadsafe(self.entered.set)
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        if any(POISON in ids for ids in batch):
            raise RuntimeError("poisoned batch")
        return self.model.embed(batch)

    def inputs_seen(self) -> list[list[int]]:
        return [ids for call in self.calls for ids in call]


def texts(count: int) -> list[str]:
    rng = random.Random(count)
    words = ["cat", "mat", "market", "report", "rain", "train", "soup", "lake", "museum", "refund"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(count)]


@bounded
async def test_concurrent_callers_share_model_calls_with_the_same_results(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_wait=0.1)
    unbatched = MicroBatcher(model, batching=False)
    # 32 different texts of one token length, so the batch is one model call (no length runs).
    animals = ["cat", "dog", "cow", "pig", "fox", "owl", "bee", "rat"]
    ids = model.tokenize(
        [f"a {animal} sits on the {place}" for animal in animals for place in ["mat", "rug", "bed", "roof"]]
    )
    assert len({len(one) for one in ids}) == 1

    async def arrive(turn: int, one: list[int]) -> npt.NDArray[np.float32]:
        for _ in range(turn):  # one caller per loop turn, as requests come off the bus: the wait gathers them
            await asyncio.sleep(0)
        return await batcher.embed([one])

    try:
        together = await asyncio.gather(*(arrive(turn, one) for turn, one in enumerate(ids)))
        alone = await asyncio.gather(*(unbatched.embed([one]) for one in ids))
    finally:
        await batcher.close()
        await unbatched.close()
    assert len(recorder.calls) == 1  # not 32 calls, nor a first call for the first arrival alone
    assert sorted(map(tuple, recorder.inputs_seen())) == sorted(map(tuple, ids))
    for mine, reference in zip(together, alone, strict=True):
        assert mine.shape == (1, 384)
        np.testing.assert_allclose(mine, reference, atol=1e-5)


@bounded
async def test_unbatched_runs_each_caller_alone_in_arrival_order(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, batching=False)
    ids = model.tokenize(texts(5))
    try:
        await asyncio.gather(*(batcher.embed([one]) for one in ids))
    finally:
        await batcher.close()
    assert recorder.calls == [[one] for one in ids]


@bounded
async def test_batches_stay_within_max_batch_and_max_batch_tokens(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_wait=0.01, max_batch=8, max_batch_tokens=256)
    singles = model.tokenize(texts(20))
    [long] = model.tokenize(["the quarterly report " * 60])  # 182 tokens
    many = model.tokenize(texts(21))
    try:
        results = await asyncio.gather(*(batcher.embed([one]) for one in singles), batcher.embed([long, *many]))
    finally:
        await batcher.close()
    assert max(len(call) for call in recorder.calls) <= 8
    assert max(sum(map(len, call)) for call in recorder.calls) <= 256
    # The caller with 22 inputs was split across calls and still gets its vectors in its own order.
    np.testing.assert_allclose(results[-1], np.concatenate([model.embed([one]) for one in [long, *many]]), atol=1e-5)
    assert len(recorder.calls) >= 6


@bounded
async def test_max_batch_tokens_bounds_a_batch_of_equal_lengths(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_wait=0.01, max_batch=64, max_batch_tokens=256)
    equal = model.tokenize([f"the quarterly report {n} " * 15 for n in range(8)])  # 62 tokens: 4 fit in 256
    assert {len(ids) for ids in equal} == {62}
    try:
        vectors = await batcher.embed(equal)
    finally:
        await batcher.close()
    assert [len(call) for call in recorder.calls] == [4, 4]
    np.testing.assert_allclose(vectors, model.embed(equal), atol=1e-5)


@bounded
async def test_one_long_input_does_not_pad_the_short_ones(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_wait=0.01)
    short = model.tokenize(["a cat"] * 31)
    [long] = model.tokenize(["word " * 200])
    try:
        await asyncio.gather(*(batcher.embed([one]) for one in [*short, long]))
    finally:
        await batcher.close()
    widths = sorted((len(call), max(map(len, call))) for call in recorder.calls)
    assert widths == [(1, 202), (31, 4)]


@bounded
async def test_a_large_caller_takes_turns_with_small_ones(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_batch=16, max_wait=0)
    big = model.tokenize(["a cat"] * 64)
    [small] = model.tokenize(["stock market falls"])
    recorder.gate.clear()
    try:
        large = asyncio.create_task(batcher.embed(big))
        await recorder.entered.wait()  # the first 16 of the large caller are computing
        later = asyncio.create_task(batcher.embed([small]))
        await asyncio.sleep(0)
        recorder.gate.set()
        await later
        assert not large.done()  # the small caller did not wait for all 64
        await large
    finally:
        await batcher.close()
    # Its batch was the second: at most 16 + 15 of the large caller's inputs were computed before it.
    first_with_small = [small in call for call in recorder.calls].index(True)
    assert sum(map(len, recorder.calls[:first_with_small])) <= 31


@bounded
async def test_the_loop_keeps_ticking_while_a_large_batch_computes(model: LocalModel) -> None:
    loop = asyncio.get_running_loop()
    batcher = MicroBatcher(model)
    ids = model.tokenize(["the quarterly report is due on friday " * 2] * 64)  # ~1000 tokens: a few hundred ms
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            lateness.append(loop.time() - due)

    ticking = asyncio.create_task(ticker())
    started = loop.time()
    try:
        await batcher.embed(ids)
    finally:
        computed = loop.time() - started
        done.set()
        await ticking
        await batcher.close()
    assert computed > 0.1, computed  # long enough that a blocked loop would show
    assert len(lateness) >= 5
    assert max(lateness) < min(0.05, computed / 3), (max(lateness), computed)


@bounded
async def test_a_cancelled_waiting_caller_is_not_computed_and_others_complete(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_wait=0)
    first, cancelled, other = model.tokenize(["a cat sits on the mat", "stock market falls", "a kitten on a rug"])
    recorder.gate.clear()
    try:
        running = asyncio.create_task(batcher.embed([first]))
        await recorder.entered.wait()  # the model thread is busy: the next two callers wait in the queue
        waiting = asyncio.create_task(batcher.embed([cancelled]))
        completing = asyncio.create_task(batcher.embed([other]))
        await asyncio.sleep(0)  # both are queued
        waiting.cancel()
        recorder.gate.set()
        vectors = await completing
        await running
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await batcher.close()
    assert cancelled not in recorder.inputs_seen()
    np.testing.assert_allclose(vectors, model.embed([other]), atol=1e-5)


@bounded
async def test_a_caller_cancelled_mid_compute_does_not_break_the_others(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_wait=0.01)
    mine, theirs = model.tokenize(["a cat sits on the mat", "a kitten on a rug"])
    recorder.gate.clear()
    try:
        cancelled = asyncio.create_task(batcher.embed([mine]))
        survivor = asyncio.create_task(batcher.embed([theirs]))
        await recorder.entered.wait()  # both are in the model call now
        cancelled.cancel()
        recorder.gate.set()
        vectors = await survivor
        after = await batcher.embed([mine])  # the batcher still works
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    finally:
        await batcher.close()
    assert recorder.calls[0] == [theirs, mine] or recorder.calls[0] == [mine, theirs]
    np.testing.assert_allclose(vectors, model.embed([theirs]), atol=1e-5)
    np.testing.assert_allclose(after, model.embed([mine]), atol=1e-5)


@bounded
async def test_a_model_error_reaches_only_the_callers_of_its_batch(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_wait=0.01)
    [good] = model.tokenize(["a cat sits on the mat"])
    poisoned = [model.cls_id, POISON, model.sep_id]
    recorder.gate.clear()
    try:
        failing = asyncio.create_task(batcher.embed([poisoned]))
        same_batch = asyncio.create_task(batcher.embed([good]))
        await recorder.entered.wait()
        next_batch = asyncio.create_task(batcher.embed([good]))
        await asyncio.sleep(0)
        recorder.gate.set()
        results = await asyncio.gather(failing, same_batch, next_batch, return_exceptions=True)
    finally:
        await batcher.close()
    assert [type(r).__name__ for r in results] == ["RuntimeError", "RuntimeError", "ndarray"]
    assert str(results[0]) == "poisoned batch"
    assert len(recorder.calls) == 2


@bounded
async def test_too_long_input_is_refused_for_its_caller_only(model: LocalModel) -> None:
    batcher = MicroBatcher(model)
    [ok] = model.tokenize(["a cat"])
    try:
        results = await asyncio.gather(
            batcher.embed([ok, [model.cls_id] * 257]), batcher.embed([ok]), return_exceptions=True
        )
    finally:
        await batcher.close()
    assert isinstance(results[0], ValueError) and "input[1] has 257 tokens" in str(results[0])
    assert isinstance(results[1], np.ndarray)


@bounded
async def test_close_fails_waiting_callers(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_wait=0)
    [ids] = model.tokenize(["a cat"])
    recorder.gate.clear()
    running = asyncio.create_task(batcher.embed([ids]))
    await recorder.entered.wait()
    waiting = asyncio.create_task(batcher.embed([ids]))
    await asyncio.sleep(0)
    await batcher.close()
    recorder.gate.set()
    results = await asyncio.gather(running, waiting, return_exceptions=True)
    assert all(isinstance(r, BatcherClosed) for r in results), results
    with pytest.raises(BatcherClosed):
        await batcher.embed([ids])


def test_length_runs_is_the_cheapest_split() -> None:
    def cost(lengths: list[int], ends: list[int]) -> int:
        starts = [0, *ends[:-1]]
        return sum(10 + (end - start) * lengths[end - 1] for start, end in zip(starts, ends, strict=True))

    rng = random.Random(11)
    for _ in range(200):
        lengths = sorted(rng.choice([rng.randint(2, 20), rng.randint(2, 256)]) for _ in range(rng.randint(1, 9)))
        splits = (
            [*(i for i, cut in enumerate(mask, 1) if cut), len(lengths)]
            for mask in itertools.product([False, True], repeat=len(lengths) - 1)
        )
        assert cost(lengths, length_runs(lengths)) == min(cost(lengths, ends) for ends in splits)
    assert length_runs([]) == []
    assert length_runs([4] * 31 + [202]) == [31, 32]


@bounded
async def test_a_split_caller_cancelled_mid_compute_leaves_the_wait_working(model: LocalModel) -> None:
    recorder = Recorder(model, asyncio.get_running_loop())
    batcher = MicroBatcher(recorder, max_batch=16, max_wait=0.1)
    [one] = model.tokenize(["a cat"])
    recorder.gate.clear()
    try:
        big = asyncio.create_task(batcher.embed([one] * 40))
        await recorder.entered.wait()  # its first 16 are computing, 24 are held back
        big.cancel()
        recorder.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await big
        await batcher.embed([one])  # queued behind the cancelled caller's model call: that call is over now
        calls_before = len(recorder.calls)

        async def arrive(turn: int) -> None:
            for _ in range(turn):
                await asyncio.sleep(0)
            await batcher.embed([one])

        await asyncio.gather(*(arrive(turn) for turn in range(8)))
    finally:
        await batcher.close()
    assert calls_before == 2
    # The dropped 24 inputs are not counted as waiting: the bounded wait still gathers the 8 callers into one call.
    assert [len(call) for call in recorder.calls[2:]] == [8]
