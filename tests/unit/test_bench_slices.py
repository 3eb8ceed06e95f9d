"""tools/bench.py: a non-stream row measured in interleaved slices reports its median slice."""

from __future__ import annotations

from typing import Any

import pytest

from tools.bench import combine_slices


def _slice(ok: int, rps: float, p50: float, edge_ms: float, worker_ms: float, nats_ms: float) -> dict[str, Any]:
    total = {"edge": edge_ms, "worker": worker_ms, "nats-server": nats_ms, "sandbox": 100.0}
    per = {name: ms / ok for name, ms in total.items()}
    return {
        "ok": ok, "errors": 0, "rps": rps, "p50_ms": p50, "p99_ms": p50 * 2,
        "cpu_ms_total": total, "cpu_ms_per_op": per,
        "gateway_cpu_ms_per_op": per["edge"] + per["worker"] + per["nats-server"],
        "cmd": {"kind": "wrk", "concurrency": 1},
    }


def test_the_median_slice_is_reported_and_the_mean_kept_beside_it() -> None:
    # five 2-second slices; the fourth ran in a slow spell (twice the CPU per request)
    slices = [_slice(2000, 1000.0, 0.9, 700.0, 600.0, 300.0) for _ in range(5)]
    slices[3] = _slice(1000, 500.0, 1.8, 700.0, 600.0, 300.0)
    row = combine_slices(slices)

    assert row["ok"] == 9000 and row["errors"] == 0 and row["slices"] == 5
    assert row["rps"] == pytest.approx(9000 / 10.0)  # requests over the time the slices ran
    assert row["p50_ms"] == pytest.approx(0.9)
    assert row["gateway_cpu_ms_per_op"] == pytest.approx(0.8)  # the typical slice, not the spell
    assert row["gateway_cpu_ms_per_op_slices"][3] == pytest.approx(1.6)
    assert row["gateway_cpu_ms_per_op_mean"] == pytest.approx(5 * 1600.0 / 9000)  # every slice counted
    assert row["cpu_ms_total"]["edge"] == pytest.approx(3500.0)
    assert row["cpu_ms_per_op"]["edge"] == pytest.approx(0.35)


def test_a_slice_without_answers_leaves_the_row_without_a_cpu_figure() -> None:
    good = _slice(2000, 1000.0, 0.9, 700.0, 600.0, 300.0)
    failed = {**_slice(1, 1.0, 0.9, 0.0, 0.0, 0.0), "ok": 0, "errors": 7, "rps": 0.0,
              "gateway_cpu_ms_per_op": None, "first_error": "wrk counted errors"}
    failed["cpu_ms_per_op"] = dict.fromkeys(failed["cpu_ms_per_op"])
    row = combine_slices([good, failed, good])

    assert row["errors"] == 7
    assert row["first_error"] == "wrk counted errors"
    assert row["gateway_cpu_ms_per_op"] is None  # never a median that hides a broken slice
    assert row["cpu_ms_per_op"]["edge"] is None
