"""Adaptive micro-batching: gathering, bounds, and errors that stay with their own request."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import requests

from modelcycle.workloads.serve_batching import Job, MicroBatcher, Outcome
from support import models
from support.oip_server import serve


class FakeModel:
    """Doubles its input; refuses NaN like many estimators; records the batch sizes it saw."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, x: Any, proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(x, dtype=float)
        self.calls.append(len(x))
        if np.isnan(x).any():
            raise ValueError("Input X contains NaN")
        return x[:, 0] * 2, (np.column_stack([x[:, 0], -x[:, 0]]) if proba else None)


async def run_jobs(
    batcher: MicroBatcher, rows: list[np.ndarray], *, proba: list[bool] | None = None, stagger: bool = False
) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Outcome]] = []
    batcher.start()
    for i, x in enumerate(rows):
        future: asyncio.Future[Outcome] = loop.create_future()
        futures.append(future)
        batcher.submit(Job(x, len(x), bool(proba and proba[i]), future.set_result))
        if stagger:
            await asyncio.sleep(0)
    results = await asyncio.gather(*futures)
    await batcher.close()
    return list(results)


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "thread"])
def test_concurrent_requests_share_a_predict_call(threaded: bool) -> None:
    model = FakeModel()
    executor = ThreadPoolExecutor(1) if threaded else None
    batcher = MicroBatcher(model.predict, max_batch_size=64, max_delay=0.01, executor=executor)
    rows = [np.array([[float(i), 0.0]]) for i in range(40)]
    results = asyncio.run(run_jobs(batcher, rows))
    assert model.calls == [40]
    for i, result in enumerate(results):
        assert not isinstance(result, BaseException)
        assert result[0].tolist() == [2.0 * i]


def test_batch_size_is_bounded_and_big_requests_run_alone() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model.predict, max_batch_size=10, max_delay=0.01)
    rows = [np.ones((3, 2))] * 7 + [np.ones((25, 2))] + [np.ones((1, 2))] * 2
    asyncio.run(run_jobs(batcher, rows))
    assert model.calls == [9, 9, 3, 25, 2]
    assert all(n <= 10 for n in model.calls if n != 25)


def test_a_failing_request_does_not_fail_its_batch_mates() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model.predict, max_batch_size=64, max_delay=0.01)
    rows = [np.array([[1.0, 0.0]]), np.array([[np.nan, 0.0]]), np.array([[3.0, 0.0], [4.0, 0.0]])]
    results = asyncio.run(run_jobs(batcher, rows, proba=[True, False, True]))
    assert model.calls[0] == 4  # the batch was tried first, then each request alone
    assert sorted(model.calls[1:]) == [1, 1, 2]
    ok1, bad, ok2 = results
    assert isinstance(bad, ValueError)
    assert not isinstance(ok1, BaseException) and ok1[0].tolist() == [2.0] and ok1[1] is not None
    assert not isinstance(ok2, BaseException) and ok2[0].tolist() == [6.0, 8.0] and ok2[1].shape == (2, 2)


def test_mismatched_widths_fall_back_to_single_predicts() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model.predict, max_batch_size=64, max_delay=0.01)
    results = asyncio.run(run_jobs(batcher, [np.ones((1, 2)), np.ones((1, 3))]))
    assert all(not isinstance(r, BaseException) for r in results)


def test_a_lone_request_is_not_held_back() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model.predict, max_batch_size=64, max_delay=5.0)  # a huge bound

    async def one() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await run_jobs(batcher, [np.ones((1, 2))])
        assert not isinstance(results[0], BaseException)
        return loop.time() - started

    assert asyncio.run(one()) < 0.5


def test_the_delay_bound_ends_gathering() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model.predict, max_batch_size=1000, max_delay=0.0)
    asyncio.run(run_jobs(batcher, [np.ones((1, 2))] * 5, stagger=True))
    assert len(model.calls) >= 1 and sum(model.calls) == 5


def test_trickling_requests_under_load_wait_for_batch_mates() -> None:
    """gRPC hands requests to the loop one at a time: once the batcher has seen company, it waits a
    little for the next one instead of dispatching at the first empty pass of the loop."""
    model = FakeModel()
    batcher = MicroBatcher(model.predict, max_batch_size=64, max_delay=0.5)

    async def main() -> list[Outcome]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outcome]] = []

        def submit() -> None:
            future: asyncio.Future[Outcome] = loop.create_future()
            futures.append(future)
            batcher.submit(Job(np.ones((1, 2)), 1, False, future.set_result, trickles=True))

        batcher.start()
        submit()
        submit()  # a burst of two: the batcher has now seen concurrent load
        await asyncio.gather(*futures)
        for i in range(10):  # then ten requests 50 us apart, each on its own pass of the loop
            loop.call_later(0.00005 * i, submit)
        await asyncio.sleep(0.01)
        results = await asyncio.gather(*futures)
        await batcher.close()
        return list(results)

    results = asyncio.run(main())
    assert len(results) == 12 and not any(isinstance(r, BaseException) for r in results)
    assert model.calls[0] == 2 and len(model.calls) <= 3, model.calls


def test_a_lone_trickling_request_is_not_held_back() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model.predict, max_batch_size=64, max_delay=2.0)

    async def one() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        batcher.start()
        future: asyncio.Future[Outcome] = loop.create_future()
        batcher.submit(Job(np.ones((1, 2)), 1, False, future.set_result, trickles=True))
        await future
        await batcher.close()
        return loop.time() - started

    assert asyncio.run(one()) < 1.0


def test_statistics_hook_sees_successful_rows_only() -> None:
    model = FakeModel()
    seen: list[int] = []
    batcher = MicroBatcher(
        model.predict, max_batch_size=64, max_delay=0.01, on_batch=lambda x, p: seen.append(len(x))
    )
    asyncio.run(run_jobs(batcher, [np.ones((2, 2)), np.array([[np.nan, 1.0]]), np.ones((3, 2))]))
    assert sorted(seen) == [2, 3]


def test_server_batches_concurrent_clients_and_isolates_a_bad_one(tmp_path: Any) -> None:
    model = models.breast_cancer_model(tmp_path / "bc", "lr")
    url_path = "/v2/models/bc/infer"
    with serve(model.path, name="bc", args=("--max-batch-size", "64", "--max-delay-us", "20000")) as server:
        results: dict[int, requests.Response] = {}

        def client(i: int) -> None:
            session = requests.Session()
            for round_ in range(10):
                row = model.x[i : i + 1].copy()
                if i == 3 and round_ == 5:
                    row[0, 4] = np.nan
                body = {
                    "id": f"{i}-{round_}",
                    "inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 30], "data": row.tolist()}],
                }
                response = session.post(
                    server.url + url_path, data=json.dumps(body).replace("NaN", "null"), timeout=10
                )
                results[i * 100 + round_] = response

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = {k for k, r in results.items() if r.status_code != 200}
        assert failed == {305}, {k: results[k].text for k in failed}
        assert "NaN" in results[305].json()["error"]
        for key, response in results.items():
            if key != 305:
                i = key // 100
                assert response.json()["outputs"][0]["data"] == model.predict(model.x[i : i + 1]).tolist()
        metrics = server.get("/metrics").text
        count = float(
            next(
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith("modelcycle_batch_requests_count")
            )
        )
        total = float(
            next(
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith("modelcycle_batch_requests_sum")
            )
        )
        assert total >= 160 and count < total  # some predict calls served several requests
