"""What both kinds of chatgpt-web job (chat.py, native.py) run with."""

from __future__ import annotations

from dataclasses import dataclass

from libs.account_pool.leasing import Leasing
from libs.account_pool.pool import AccountPool
from services.chatgpt_web_worker.config import WebConfig
from services.chatgpt_web_worker.continuity import Continuity
from services.chatgpt_web_worker.turn import Turns


@dataclass(frozen=True)
class WebParts:
    """What both kinds of job run with."""

    config: WebConfig
    pool: AccountPool
    leasing: Leasing
    continuity: Continuity
    turns: Turns
