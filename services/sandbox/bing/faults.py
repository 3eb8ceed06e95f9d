"""Per-account faults armed through the control API, consumed in arming order by matching requests:
`create_status=<code>` by conversation creates, every other kind by chat invocations."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

RESULT_KINDS = frozenset({"Throttled", "CaptchaChallenge", "InvalidSession", "UnauthorizedRequest"})
SOCKET_KINDS = frozenset({"close7", "drop"})
ANY = "any"
_CREATE_STATUS = re.compile(r"create_status=([2-5][0-9][0-9])\Z")
_ACCOUNT = re.compile(r"[a-z0-9-]+\Z")
MAX_ARMED = 1_000


@dataclass(slots=True)
class Fault:
    account: str  # a name, or "any" (anonymous conversations match only "any")
    kind: str
    times: int

    @property
    def create_status(self) -> int | None:
        match = _CREATE_STATUS.match(self.kind)
        return int(match.group(1)) if match else None


def check(account: object, kind: object, times: object) -> Fault:
    """A Fault from a control body, or ValueError naming what is wrong."""
    if not isinstance(account, str) or not _ACCOUNT.match(account):
        raise ValueError('account must be an account name ([a-z0-9-]+) or "any"')
    if not isinstance(kind, str) or not (kind in RESULT_KINDS or kind in SOCKET_KINDS or _CREATE_STATUS.match(kind)):
        raise ValueError("kind must be one of " + ", ".join(sorted(RESULT_KINDS | SOCKET_KINDS))
                         + ", create_status=<200..599>")
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ValueError("times must be an integer >= 1")
    return Fault(account, kind, times)


class Faults:
    def __init__(self) -> None:
        self._armed: list[Fault] = []

    def arm(self, fault: Fault) -> None:
        if len(self._armed) >= MAX_ARMED:
            raise ValueError(f"at most {MAX_ARMED} faults may be armed")
        self._armed.append(fault)

    def take(self, account: str | None, create: bool) -> Fault | None:
        """The earliest armed fault for this account (or "any") of the request's sort, counted down."""
        for i, fault in enumerate(self._armed):
            if fault.account not in (ANY, account) or (fault.create_status is not None) != create:
                continue
            fault.times -= 1
            if fault.times <= 0:
                del self._armed[i]
            return fault
        return None

    def listing(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self._armed]

    def reset(self) -> None:
        self._armed.clear()
