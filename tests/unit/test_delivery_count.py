"""libs.bus.delivery_count reads what nats-py's Msg.metadata reads, for both ack subject forms."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from libs.bus import delivery_count


@pytest.mark.parametrize("subject", [
    "$JS.ACK.SY_V1_JOBS.sy_v1_jobs_openai.3.12345.12340.1795478063203000000.0",
    "$JS.ACK.hub.ACCOUNTHASH.SY_V1_JOBS.sy_v1_jobs_openai.5.1.2.1795478063203000000.7.token",
    "$JS.ACK.hub.ACCOUNTHASH.SY_V1_JOBS.sy_v1_jobs_openai.12.1.2.1795478063203000000.7",
])
def test_delivery_count_matches_nats_py(subject: str) -> None:
    assert delivery_count(subject) == Msg.Metadata._from_reply(subject).num_delivered
