"""libs/quota.py: windows, claims across edges, settle, headers (sans I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from libs import quota
from libs.quota import REQ, TOK, KeyState, Limits, Need, Shared, claim, go_duration

TTL = 15.0


class Edge:
    """One edge's state on a shared record, claims applied as the I/O layer applies them."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.state = KeyState(limits)

    def admit(self, board: list[Shared], needs: list[Need], now: float, give_back: bool = False) -> list[bool]:
        result: list[bool] = []
        pending = []
        for need in needs:
            if self.state.take(need, now):
                result.append(True)
            else:
                pending.append(need)
        if pending or give_back or not needs:  # no needs: an upkeep claim
            c = claim(board[0], self.state, pending, edge=self.name, now=now, ttl=TTL, give_back=give_back)
            board[0] = c.shared
            c.apply(self.state)
            quota.reset_rate(self.state, now)
            quota.consume_claimed(self.state, [n for n, r in zip(pending, c.refusals, strict=True) if r is None], now)
            result += [r is None for r in c.refusals]
        return result


def test_rpm_across_two_edges_admits_exactly_the_limit() -> None:
    limits = Limits(rpm=12)
    board = [Shared()]
    a, b = Edge("a", limits), Edge("b", limits)
    admitted = 0
    for i in range(36):
        edge = a if i % 2 else b
        admitted += sum(edge.admit(board, [Need(0)], now=100.0 + i * 0.01))
    assert admitted == 12
    window = board[0].windows[REQ]
    assert window is not None and window[1] == 12


def test_a_new_window_starts_at_the_first_request_after_the_last_ended() -> None:
    limits = Limits(rpm=2)
    board = [Shared()]
    a = Edge("a", limits)
    assert a.admit(board, [Need(0)] * 3, now=10.0) == [True, True, False]
    assert a.admit(board, [Need(0)], now=69.9) == [False]
    assert a.admit(board, [Need(0)], now=75.0) == [True]  # the window 10..70 ended: a new one from 75
    assert board[0].windows[REQ] == [75.0, 1]
    assert a.admit(board, [Need(0)] * 2, now=134.9) == [True, False]


def test_far_from_the_limit_a_claim_prefetches_and_later_requests_take_no_claim() -> None:
    limits = Limits(rpm=1_000_000, tpm=10_000_000)
    board = [Shared()]
    a = Edge("a", limits)
    a.admit(board, [Need(10)] * 64, now=0.0)  # first claim: exactly the need, no rate known
    a.admit(board, [Need(10)] * 64, now=0.01)  # now a rate: 6400 requests/s → a prefetch
    assert a.state.allow[REQ] > 1000
    before = board[0]
    for i in range(500):
        assert a.state.take(Need(10), 0.02 + i * 1e-4)
    assert board[0] is before  # no claim


def test_tokens_reserve_then_settle_refunds_and_charges_a_debt() -> None:
    limits = Limits(tpm=1000)
    board = [Shared()]
    a = Edge("a", limits)
    assert a.admit(board, [Need(400)], now=0.0) == [True]
    starts = tuple(a.state.start)
    assert not a.state.settle(400, 100, starts, slot=False)  # 300 back
    assert a.state.remaining(TOK) == 900
    assert a.admit(board, [Need(900)], now=1.0) == [True]
    # a stream that ran long: 900 reserved, 1500 used: a debt past the limit, charged by the next claim
    assert a.state.settle(900, 1500, tuple(a.state.start), slot=False)
    assert a.state.has_debt()
    assert a.admit(board, [Need(1)], now=2.0) == [False]
    window = board[0].windows[TOK]
    assert window is not None and window[1] == 1600  # 100 + 1500: overspent by that one request only
    assert not a.state.has_debt()


def test_a_refund_goes_back_only_to_its_own_window() -> None:
    limits = Limits(tpm=1000)
    board = [Shared()]
    a = Edge("a", limits)
    a.admit(board, [Need(1000)], now=0.0)
    old = tuple(a.state.start)
    assert a.admit(board, [Need(10)], now=61.0) == [True]  # a new window
    before = a.state.allow[TOK]
    a.state.settle(1000, 0, old, slot=False)
    assert a.state.allow[TOK] == before  # the old window's 1000 do not come back into this one


def test_budget_total_stops_the_key_and_survives_a_fresh_edge() -> None:
    limits = Limits(total=100)
    board = [Shared()]
    a = Edge("a", limits)
    assert a.admit(board, [Need(60), Need(30), Need(20)], now=0.0) == [True, True, False]
    a.state.settle(60, 60, tuple(a.state.start), slot=False)
    restarted = Edge("a", limits)  # a restart: only the shared record remains
    refused = claim(board[0], restarted.state, [Need(20)], edge="a", now=1.0, ttl=TTL).refusals[0]
    assert refused is not None and refused.limit == "budget_total" and refused.used == 90


def test_period_budget_opens_again_after_its_period() -> None:
    limits = Limits.of(None, None, None, 50, 2, None)
    board = [Shared()]
    a = Edge("a", limits)
    assert a.admit(board, [Need(50), Need(1)], now=0.0) == [True, False]
    assert a.admit(board, [Need(1)], now=1.9) == [False]
    assert a.admit(board, [Need(50)], now=2.0) == [True]


def test_concurrency_across_edges_and_a_dead_edges_slots_lapse() -> None:
    limits = Limits(concurrent=2)
    board = [Shared()]
    a, b = Edge("a", limits), Edge("b", limits)
    assert a.admit(board, [Need(0)], now=0.0) == [True]
    assert b.admit(board, [Need(0)], now=0.0) == [True]
    assert b.admit(board, [Need(0)], now=0.1) == [False]
    # a finishes: near the limit its spare slot is given back at once
    a.state.settle(0, 0, tuple(a.state.start), slot=True)
    assert a.state.spare_slots_to_give()
    a.admit(board, [], now=0.2, give_back=False)
    assert b.admit(board, [Need(0)], now=0.3) == [True]
    # b dies holding 2 slots: after the TTL they no longer count
    c = Edge("c", limits)
    assert c.admit(board, [Need(0)], now=5.0) == [False]
    assert c.admit(board, [Need(0)], now=0.3 + TTL) == [True]


def test_a_refusal_says_what_openai_says() -> None:
    limits = Limits(rpm=3)
    board = [Shared()]
    a = Edge("a", limits)
    a.admit(board, [Need(0)] * 3, now=0.0)
    refusal = claim(board[0], a.state, [Need(0)], edge="a", now=40.0, ttl=TTL).refusals[0]
    assert refusal is not None
    assert quota.refusal_message(refusal) == (
        "Rate limit reached for requests per minute (RPM) on this key: Limit 3, Used 3, Requested 1. "
        "Please try again in 20s.")


def test_headers_and_remaining() -> None:
    limits = Limits(rpm=10, tpm=1000)
    board = [Shared()]
    a = Edge("a", limits)
    a.admit(board, [Need(100)], now=0.0)
    headers = dict(a.state.headers(0.8))
    assert headers == {
        b"x-ratelimit-limit-requests": b"10", b"x-ratelimit-remaining-requests": b"9",
        b"x-ratelimit-reset-requests": b"59.2s", b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"900", b"x-ratelimit-reset-tokens": b"59.2s",
    }


def test_go_duration() -> None:
    assert [go_duration(s) for s in (0, 0.12, 1, 59.2, 360, 3600, 3661.5)] == [
        "0s", "120ms", "1s", "59.2s", "6m0s", "1h0m0s", "1h1m1.5s"]


def test_shared_round_trips() -> None:
    shared = Shared([[1.5, 3], None, [2.0, 40]], 99, {"edge-a": [2, 10.0]})
    assert Shared.decode(shared.encode()) == shared
    assert Shared.decode(None) == Shared()


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 40), plan=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 6)), max_size=40),
       idle=st.lists(st.integers(0, 2), max_size=5))
def test_edges_together_never_admit_more_than_the_limit_and_all_of_it_under_demand(
        limit: int, plan: list[tuple[int, int]], idle: list[int]) -> None:
    """Any interleaving of three edges' batches and give-backs, within one window: the admitted
    total never passes the limit, and each refusal comes only when the shared counter is full."""
    limits = Limits(rpm=limit, tpm=limit * 10)
    board = [Shared()]
    edges = [Edge(n, limits) for n in "abc"]
    admitted = 0
    now = 0.0
    for step, (who, count) in enumerate(plan):
        now += 0.01
        if step < len(idle):
            edges[idle[step]].admit(board, [], now, give_back=True)
        got = edges[who].admit(board, [Need(10)] * count, now)
        admitted += sum(got)
        if not all(got):
            # refused only when the shared counter has no room left for one more
            requests, tokens = board[0].windows[REQ], board[0].windows[TOK]
            assert requests is not None and tokens is not None
            assert requests[1] >= limit or tokens[1] + 10 > limit * 10
        assert admitted <= limit


def test_refusals_do_not_keep_a_key_busy() -> None:
    """An edge gives its spare quota back once the key is idle: refused requests are no use of it
    (else two edges refusing each other would each sit on a spare slice forever)."""
    limits = Limits(total=100)
    board = [Shared()]
    a = Edge("a", limits)
    assert a.admit(board, [Need(60)], now=1.0) == [True]
    a.state.settle(60, 20, tuple(a.state.start), slot=False)
    assert a.admit(board, [Need(90)], now=5.0) == [False]
    assert a.state.last_used == 1.0 and a.state.spare()
