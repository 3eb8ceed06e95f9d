"""A managed key's limits shared by every edge replica, sans I/O: the shared record (one KV entry
per key), the windows, the claims an edge makes on it, settling, and the rate-limit headers.

The shared record counts what every edge has *claimed*: requests and tokens of the current
minute (rpm, tpm), tokens of the current budget period and of the key's life, and the
concurrency slots each edge holds. An edge claims quota in slices with one compare-and-set and
spends them locally (`KeyState.take`, no I/O): far from a limit a slice covers many requests (a
prefetch sized from the local rate and an eighth of what is left), near it a claim covers exactly
what the waiting requests need, so the edges together admit exactly the limit.

Windows (rpm, tpm: 60 s; the budget period: its length) start at the first claim after the
previous window ended: a burst never straddles a clock-aligned boundary. A slice's unused part
is given back when the edge goes idle, and is lost when its window ends (the window's count is
dropped as a whole).

Tokens are reserved at admission (prompt estimate + max output) and settled at the end with what
was delivered: a refund goes back to the local allowance (same window only), an overrun becomes a
local debt (negative allowance) that the next claim or flush charges to the shared record, even
past the limit: one long stream overspends by at most itself.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

MINUTE = 60.0
# the output tokens a request reserves when it sets no maximum (max_tokens): settled to what it
# really produced at its end
DEFAULT_OUTPUT_RESERVE = 512
PREFETCH_DIVISOR = 8  # a prefetch takes at most this fraction of what is left of a limit
PREFETCH_SECONDS = 1.0  # ... and at most what the edge spent at its recent rate over this long

# windowed dimensions, in the order a refusal names them
REQ, TOK, PER = 0, 1, 2
WINDOWED = (REQ, TOK, PER)


@dataclass(frozen=True)
class Limits:  # no slots: `limit_lines` is cached on the instance
    rpm: int | None = None
    tpm: int | None = None
    period_tokens: int | None = None
    period_seconds: int | None = None
    total: int | None = None
    concurrent: int | None = None

    @classmethod
    def of(cls, rpm: int | None, tpm: int | None, budget_total: int | None, budget_period_tokens: int | None,
           budget_period_seconds: int | None, max_concurrent: int | None) -> Limits:
        period = budget_period_tokens if budget_period_tokens is not None and budget_period_seconds else None
        return cls(rpm, tpm, period, budget_period_seconds if period is not None else None, budget_total,
                   max_concurrent)

    @functools.cached_property
    def limit_lines(self) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        return ((b"x-ratelimit-limit-requests", b"%d" % (self.rpm or 0)),
                (b"x-ratelimit-limit-tokens", b"%d" % (self.tpm or 0)))

    @property
    def empty(self) -> bool:
        return (self.rpm is None and self.tpm is None and self.period_tokens is None and self.total is None
                and self.concurrent is None)

    @property
    def counts_tokens(self) -> bool:
        return self.tpm is not None or self.period_tokens is not None or self.total is not None

    def windowed(self, dim: int) -> int | None:
        return self.rpm if dim == REQ else self.tpm if dim == TOK else self.period_tokens

    def length(self, dim: int) -> float:
        return float(self.period_seconds or MINUTE) if dim == PER else MINUTE


@dataclass(slots=True)
class Shared:
    """The KV entry: `windows[dim]` = [start, used] (None: no window open), `total` tokens spent
    over the key's life, `slots[edge]` = [held, renewed at]."""

    windows: list[list[float] | None] = field(default_factory=lambda: [None, None, None])
    total: int = 0
    slots: dict[str, list[float]] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps({"w": self.windows, "total": self.total, "slots": self.slots})

    @classmethod
    def decode(cls, data: bytes | None) -> Shared:
        if not data:
            return cls()
        raw: dict[str, Any] = orjson.loads(data)
        windows = list(raw.get("w") or [None, None, None])[:3]
        windows += [None] * (3 - len(windows))
        return cls(windows, int(raw.get("total") or 0), dict(raw.get("slots") or {}))

    def window(self, dim: int, length: float, now: float) -> tuple[float | None, int]:
        """(start, used) of the window open at `now`; (None, 0) when none is (the last one ended)."""
        w = self.windows[dim]
        if w is None or now >= w[0] + length:
            return None, 0
        return w[0], int(w[1])

    def others_slots(self, edge: str, now: float, ttl: float) -> int:
        """Slots held by the other edges that renewed them within `ttl` (a dead edge's lapse)."""
        return sum(int(h) for e, (h, at) in self.slots.items() if e != edge and now - at < ttl)


@dataclass(slots=True)
class Need:
    """What one request needs: 1 request, `tokens` reserved."""

    tokens: int


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: str  # rpm, tpm, budget_period, budget_total, concurrency
    cap: int
    used: int
    requested: int
    retry_after: float


@dataclass(slots=True)
class KeyState:
    """One edge's view of one key: what it claimed and has not spent (`allow`, negative: a debt
    to charge), the window each allowance belongs to, the shared counters as last seen."""

    limits: Limits
    start: list[float | None] = field(default_factory=lambda: [None, None, None])
    allow: list[int] = field(default_factory=lambda: [0, 0, 0])
    seen: list[int] = field(default_factory=lambda: [0, 0, 0])  # the window's shared `used` as last seen
    allow_total: int = 0
    seen_total: int = 0
    held: int = 0  # concurrency slots this edge holds in the shared record
    in_use: int = 0
    others: int = 0  # slots the other live edges held, as last seen
    # the local rate since the last claim, for the prefetch's size
    spent_req: int = 0
    spent_tok: int = 0
    since: float = 0.0
    last_used: float = 0.0

    def take(self, need: Need, now: float) -> bool:
        """Admit from what this edge already claimed; False: a claim is needed (no I/O here)."""
        limits = self.limits
        tokens = need.tokens
        if limits.rpm is not None and not self._has(REQ, 1, now):
            return False
        if limits.tpm is not None and not self._has(TOK, tokens, now):
            return False
        if limits.period_tokens is not None and not self._has(PER, tokens, now):
            return False
        if limits.total is not None and self.allow_total < tokens:
            return False
        if limits.concurrent is not None and self.in_use >= self.held:
            return False
        self._consume(tokens, now)
        return True

    def take_anyway(self, need: Need, now: float) -> None:
        """Admit without a claim (the shared record is unreachable): a debt the next claim pays."""
        self._consume(need.tokens, now)
        if self.limits.concurrent is not None:
            self.held = max(self.held, self.in_use)

    def _has(self, dim: int, n: int, now: float) -> bool:
        start = self.start[dim]
        return start is not None and now < start + self.limits.length(dim) and self.allow[dim] >= n

    def _consume(self, tokens: int, now: float) -> None:
        limits = self.limits
        if limits.rpm is not None:
            self.allow[REQ] -= 1
        if limits.tpm is not None:
            self.allow[TOK] -= tokens
        if limits.period_tokens is not None:
            self.allow[PER] -= tokens
        if limits.total is not None:
            self.allow_total -= tokens
        if limits.concurrent is not None:
            self.in_use += 1
        self.spent_req += 1
        self.spent_tok += tokens
        self.last_used = now

    def settle(self, reserved: int, actual: int, starts: tuple[float | None, ...], slot: bool) -> bool:
        """Charge what a request used instead of what it reserved; True when a debt is left for
        the shared record (a flush is due). A refund goes back only to the window it came from."""
        limits = self.limits
        diff = reserved - actual
        if slot and limits.concurrent is not None:
            self.in_use = max(0, self.in_use - 1)
        debt = False
        if diff == 0:
            return False
        for dim in (TOK, PER):
            if limits.windowed(dim) is None:
                continue
            if diff < 0 or self.start[dim] == starts[dim]:
                self.allow[dim] += diff
            debt = debt or self.allow[dim] < 0
        if limits.total is not None:
            self.allow_total += diff
            debt = debt or self.allow_total < 0
        return debt

    def has_debt(self) -> bool:
        return min(self.allow) < 0 or self.allow_total < 0

    def spare(self) -> bool:
        """Holds unspent quota or slots another edge might need (given back when idle)."""
        return max(self.allow) > 0 or self.allow_total > 0 or self.held > self.in_use

    def spare_slots_to_give(self) -> bool:
        """Slots beyond what is in use and beyond what a prefetch may keep: give them back now."""
        cap = self.limits.concurrent
        if cap is None or self.held <= self.in_use:
            return False
        room = cap - self.others - self.held
        return self.held - self.in_use > max(0, room) // PREFETCH_DIVISOR

    def remaining(self, dim: int) -> int:
        cap = self.limits.windowed(dim)
        assert cap is not None
        return max(0, cap - (self.seen[dim] - self.allow[dim]))

    def reset_in(self, dim: int, now: float) -> float:
        start = self.start[dim]
        return 0.0 if start is None else max(0.0, start + self.limits.length(dim) - now)

    def headers(self, now: float) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-* headers of the key's rpm and tpm (per request: the limits' own
        header lines are made once per Limits, the reset texts come from a small cache)."""
        out: list[tuple[bytes, bytes]] = []
        limits = self.limits
        if limits.rpm is not None:
            out.append(limits.limit_lines[0])
            out.append((b"x-ratelimit-remaining-requests", b"%d" % self.remaining(REQ)))
            out.append((b"x-ratelimit-reset-requests", _reset_text(self.reset_in(REQ, now))))
        if limits.tpm is not None:
            out.append(limits.limit_lines[1])
            out.append((b"x-ratelimit-remaining-tokens", b"%d" % self.remaining(TOK)))
            out.append((b"x-ratelimit-reset-tokens", _reset_text(self.reset_in(TOK, now))))
        return out


_RESET_TEXTS: dict[int, bytes] = {}


def _reset_text(seconds: float) -> bytes:
    """`go_duration` to the 10 ms, cached: many requests within a window share the text."""
    centis = math.ceil(seconds * 100)
    text = _RESET_TEXTS.get(centis)
    if text is None:
        if len(_RESET_TEXTS) > 20_000:  # bounded: a minute's texts are 6000
            _RESET_TEXTS.clear()
        text = _RESET_TEXTS[centis] = go_duration(centis / 100).encode()
    return text


@dataclass(slots=True)
class Claim:
    """The outcome of one compare-and-set on a key's shared record: the record to write, what each
    waiter got, and the change to apply to the edge's live state once the write succeeded."""

    shared: Shared
    refusals: list[Refusal | None]
    delta: list[int]  # added to allow[dim] (same window); `reset` dims are set instead
    reset: list[bool]
    starts: list[float | None]
    seen: list[int]
    delta_total: int
    seen_total: int
    delta_held: int
    others: int

    def apply(self, state: KeyState) -> None:
        for dim in WINDOWED:
            if self.reset[dim]:
                state.allow[dim] = self.delta[dim]
            else:
                state.allow[dim] += self.delta[dim]
            state.start[dim] = self.starts[dim]
            state.seen[dim] = self.seen[dim]
        state.allow_total += self.delta_total
        state.seen_total = self.seen_total
        state.held += self.delta_held
        state.others = self.others


def _prefetch(room: int, rate_amount: int, elapsed: float, unit: int) -> int:
    """A prefetch of at least one request's worth (`unit`: a request's mean), else none: near a
    limit a slice smaller than a request would only sit unused on this edge."""
    if room <= 0 or rate_amount <= 0:
        return 0
    by_rate = math.ceil(rate_amount / max(elapsed, 0.05) * PREFETCH_SECONDS)
    extra = min(room // PREFETCH_DIVISOR, by_rate)
    return extra if extra >= unit else 0


def claim(shared: Shared, state: KeyState, needs: list[Need], *, edge: str, now: float, ttl: float,
          give_back: bool = False) -> Claim:
    """Admit `needs` (in order) against the shared record and the edge's allowances; pay debts,
    give back spare quota (`give_back`), prefetch; renew the edge's slots. Pure: `shared` is copied."""
    limits = state.limits
    new = Shared(list(shared.windows), shared.total, dict(shared.slots))
    caps = [limits.windowed(d) for d in WINDOWED]
    avail = [0, 0, 0]
    room = [0, 0, 0]
    used = [0, 0, 0]
    starts: list[float | None] = [None, None, None]
    transfer = [0, 0, 0]
    reset = [False, False, False]
    for dim in WINDOWED:
        if caps[dim] is None:
            continue
        start, used[dim] = shared.window(dim, limits.length(dim), now)
        a = state.allow[dim]
        if start is None or start != state.start[dim]:
            # a new window (or one this edge has not seen): what it held belongs to the old one
            # (and a debt of the old window is forgiven with it)
            reset[dim] = True
            a = 0
        if give_back and a > 0:
            transfer[dim] = -a
        elif a < 0:
            transfer[dim] = -a  # a debt, charged even past the limit
        used[dim] += transfer[dim]
        avail[dim] = a + transfer[dim]
        starts[dim] = start
        room[dim] = caps[dim] - used[dim]  # type: ignore[operator]

    a_total = state.allow_total
    used_total = shared.total
    t_total = 0
    if limits.total is not None:
        if (give_back and a_total > 0) or a_total < 0:
            t_total = -a_total
        used_total += t_total
    avail_total = a_total + t_total
    room_total = (limits.total - used_total) if limits.total is not None else 0

    held = state.held
    others = shared.others_slots(edge, now, ttl)
    t_held = 0
    if give_back or state.spare_slots_to_give():
        t_held = -(held - state.in_use)
    avail_slots = held + t_held - state.in_use
    room_slots = (limits.concurrent - others - held - t_held) if limits.concurrent is not None else 0

    refusals: list[Refusal | None] = []
    consumed = [0, 0, 0]
    consumed_total = 0
    consumed_slots = 0
    for need in needs:
        amounts = (1, need.tokens, need.tokens)
        refusal = None
        if limits.total is not None:
            short = need.tokens - avail_total
            if short > max(0, room_total):
                refusal = Refusal("budget_total", limits.total, used_total - avail_total, need.tokens, 0.0)
        for dim in (PER, REQ, TOK):
            if refusal is not None or caps[dim] is None:
                continue
            short = amounts[dim] - avail[dim]
            if short > max(0, room[dim]):
                cap = caps[dim]
                assert cap is not None
                began = starts[dim]
                retry = (began + limits.length(dim) - now) if began is not None else limits.length(dim)
                name = "budget_period" if dim == PER else "rpm" if dim == REQ else "tpm"
                refusal = Refusal(name, cap, used[dim] - avail[dim], amounts[dim], retry)
        if refusal is None and limits.concurrent is not None and avail_slots < 1 and room_slots < 1:
            refusal = Refusal("concurrency", limits.concurrent, others + state.in_use + consumed_slots, 1, 1.0)
        refusals.append(refusal)
        if refusal is not None:
            continue
        for dim in WINDOWED:
            if caps[dim] is None:
                continue
            n = amounts[dim]
            short = max(0, n - avail[dim])
            avail[dim] += short - n
            room[dim] -= short
            used[dim] += short
            transfer[dim] += short
            consumed[dim] += n
            if starts[dim] is None:
                starts[dim] = now
        if limits.total is not None:
            short = max(0, need.tokens - avail_total)
            avail_total += short - need.tokens
            room_total -= short
            used_total += short
            t_total += short
            consumed_total += need.tokens
        if limits.concurrent is not None:
            if avail_slots < 1:
                room_slots -= 1
                t_held += 1
                avail_slots += 1
            avail_slots -= 1
            consumed_slots += 1

    if not give_back:  # a prefetch, from the local rate, for dimensions with a window open
        elapsed = now - state.since
        mean_tokens = -(-state.spent_tok // state.spent_req) if state.spent_req else 0
        for dim in WINDOWED:
            if caps[dim] is None or starts[dim] is None:
                continue
            if dim == REQ:
                extra = _prefetch(room[dim], state.spent_req, elapsed, 1)
            else:
                extra = _prefetch(room[dim], state.spent_tok, elapsed, mean_tokens)
            used[dim] += extra
            transfer[dim] += extra
        if limits.total is not None:
            extra = _prefetch(room_total, state.spent_tok, elapsed, mean_tokens)
            used_total += extra
            t_total += extra

    for dim in WINDOWED:
        if caps[dim] is None:
            continue
        start = starts[dim]
        if start is None and used[dim] > 0:
            start = starts[dim] = now  # a debt opens a window too
        new.windows[dim] = None if start is None else [start, used[dim]]
    new.total = used_total
    new_held = held + t_held
    if new_held > 0:
        new.slots[edge] = [new_held, now]
    else:
        new.slots.pop(edge, None)
    # drop lapsed edges' entries (a dead edge's slots no longer count)
    for e in [e for e, (_, at) in new.slots.items() if e != edge and now - at >= ttl]:
        del new.slots[e]

    delta = [transfer[d] - consumed[d] for d in WINDOWED]
    return Claim(new, refusals, delta, reset, starts, used, t_total - consumed_total, used_total,
                 t_held, others)


def consume_claimed(state: KeyState, admitted: list[Need], now: float) -> None:
    """Count admitted waiters in the edge's rate (their allowance was settled by `Claim.apply`)."""
    if not admitted:
        return  # a refusal or an upkeep claim: the key is no less idle
    if state.limits.concurrent is not None:
        state.in_use += len(admitted)
    state.spent_req += len(admitted)
    state.spent_tok += sum(n.tokens for n in admitted)
    state.last_used = now


def reset_rate(state: KeyState, now: float) -> None:
    state.spent_req = state.spent_tok = 0
    state.since = now


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it (OpenAI's x-ratelimit-reset-*), to the ms:
    `120ms`, `1s`, `59.2s`, `6m0s`, `1h0m0s`."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def refusal_message(refusal: Refusal) -> str:
    """OpenAI's wording, with this gateway's unit: the key (never named)."""
    wait = go_duration(max(1.0, refusal.retry_after))
    if refusal.limit == "rpm":
        return (f"Rate limit reached for requests per minute (RPM) on this key: Limit {refusal.cap}, "
                f"Used {refusal.used}, Requested {refusal.requested}. Please try again in {wait}.")
    if refusal.limit == "tpm":
        return (f"Rate limit reached for tokens per minute (TPM) on this key: Limit {refusal.cap}, "
                f"Used {refusal.used}, Requested {refusal.requested}. Please try again in {wait}.")
    if refusal.limit == "budget_period":
        return (f"You exceeded your token budget for this period on this key: Limit {refusal.cap}, "
                f"Used {refusal.used}, Requested {refusal.requested}. The period renews in {wait}.")
    if refusal.limit == "budget_total":
        return (f"You exceeded your token budget on this key: Limit {refusal.cap}, Used {refusal.used}, "
                f"Requested {refusal.requested}. Ask the gateway's administrator for a larger budget.")
    return (f"Concurrency limit reached on this key: at most {refusal.cap} requests in progress at once. "
            f"Please try again in {wait}.")
