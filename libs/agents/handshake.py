"""The registration handshake of an agent (agent-protocol.md §3.4) as a sans-I/O state machine.

    reg = Registration()                   # offers a fresh UUID
    await ws.send(reg.first_frame())       # {"id": X, "message": "Connection id", "data": ""}
    ...read frames, with a timeout of reg.remaining()...
    done = reg.receive(frame)              # Registered(agent_id, reconnect) or ProtocolError
    if reg.expired(): ...close: the agent never answered...

Correct behaviour where the seed server has bugs or gaps (do not copy them):
- the seed skips unparseable frames and waits forever for a reply; here the FIRST frame must be the
  reply (`message: "Connection id"`) and the handshake has a deadline (`REGISTRATION_TIMEOUT`);
- the seed adopts any string as an agent id; here a reclaimed id must be a UUID (the agents only
  ever store ids the server gave them), lower-cased, because the id becomes an account name on the
  bus and must not smuggle subject tokens ('.', '*', '>') or whitespace into it.
A reply carrying another id than the one offered is a reconnect (§3.4 step 2): the caller closes and
replaces a live connection registered under that id. There is no authentication in the sheet's
protocol: whoever knows an agent id can take its place; the bridge must gate the route itself.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from libs.agents.protocol import ConnectionId, ConnectionIdReply, ProtocolError, encode, parse_agent_frame

__all__ = ["REGISTRATION_TIMEOUT", "Registered", "Registration", "RegistrationState", "new_id", "valid_agent_id"]

# the agents answer the offer as soon as it arrives; 10 s is generous for a browser tab
REGISTRATION_TIMEOUT: Final = 10.0
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def new_id() -> str:
    """A fresh UUID v4 as the server writes ids (connection, ping and request ids)."""
    return str(uuid.uuid4())


def valid_agent_id(value: str) -> str | None:
    """`value` lower-cased if it is a UUID in the canonical 8-4-4-4-12 form, else None."""
    lowered = value.lower()
    return lowered if _UUID.fullmatch(lowered) else None


class RegistrationState(Enum):
    OFFERED = "offered"  # the offer is (to be) sent; waiting for the agent's reply
    REGISTERED = "registered"
    FAILED = "failed"  # a wrong first frame or the deadline passed: close the socket


@dataclass(frozen=True, slots=True)
class Registered:
    agent_id: str
    reconnect: bool  # the agent reclaimed an id from an earlier connection


class Registration:
    def __init__(
        self,
        offered_id: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = REGISTRATION_TIMEOUT,
    ) -> None:
        self.offered_id = offered_id or new_id()
        self._clock = clock
        self.deadline = clock() + timeout
        self.state = RegistrationState.OFFERED
        self.result: Registered | None = None

    def first_frame(self) -> str:
        """The frame to send right after the upgrade."""
        return encode(ConnectionId(self.offered_id))

    def remaining(self) -> float:
        """Seconds left to wait for the reply (0 once the deadline passed)."""
        return max(0.0, self.deadline - self._clock())

    def expired(self) -> bool:
        """True (and FAILED) if the reply did not come before the deadline."""
        if self.state is RegistrationState.OFFERED and self._clock() >= self.deadline:
            self.state = RegistrationState.FAILED
        return self.state is RegistrationState.FAILED

    def receive(self, frame: str | bytes) -> Registered:
        """Feed the agent's first frame. Returns the registration, or raises ProtocolError (and the
        state becomes FAILED) if the frame is not a valid reply or came too late."""
        if self.state is not RegistrationState.OFFERED:
            raise ProtocolError(f"registration is already {self.state.value}")
        if self.expired():
            raise ProtocolError("registration reply came after the deadline")
        try:
            msg = parse_agent_frame(frame)
            if not isinstance(msg, ConnectionIdReply):
                raise ProtocolError("the first frame of an agent must be its 'Connection id' reply", msg.id)
            agent_id = valid_agent_id(msg.id)
            if agent_id is None:
                raise ProtocolError("the connection id an agent reclaims must be a UUID")
        except ProtocolError:
            self.state = RegistrationState.FAILED
            raise
        self.state = RegistrationState.REGISTERED
        self.result = Registered(agent_id, reconnect=agent_id != self.offered_id.lower())
        return self.result
