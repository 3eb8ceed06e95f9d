"""The edge's configuration, read once from the environment at start-up."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from libs.bus import DEFAULT_MAX_QUEUED_PER_POOL
from libs.http_limits import ConnectionLimits
from libs.settings import env_bool, env_float, env_int, env_list, env_str
from libs.timeouts import Timeouts
from services.edge.routing import RoutingConfig


def _default_edge_id() -> str:
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname()[:20])
    return f"edge-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class EdgeSettings:
    host: str
    port: int
    nats_url: str
    allowed_origins: list[str]
    auth_tokens: list[str]
    no_log: bool
    max_body_bytes: int
    inline_body_bytes: int
    reply_buffer: int
    max_n: int
    max_queued_per_pool: int  # jobs waiting (or starting) per pool; past it a request is refused at once
    edge_id: str
    timeouts: Timeouts
    routing: RoutingConfig
    limits: ConnectionLimits  # what a client may hold before its request is complete
    public_base_url: str = ""  # where clients reach this edge, for image URLs ("": the request's Host)
    image_url_ttl: float = 3600.0  # how long an image URL serves its image
    image_store_bytes: int = 512 * 1024 * 1024  # the image store's bound (memory); the oldest go first
    sydney_upload_max_bytes: int = 10 * 1024 * 1024  # POST /image/upload's whole multipart body
    admin_key: str = ""  # guards the admin API ("": no admin API, every admin route a 404)
    api_key_prefix: str = "sb-"  # what a managed key starts with
    usage_retention_days: float = 30.0  # how long usage records and hourly aggregates are kept (SY_V1_USAGE)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EdgeSettings:
        timeouts = Timeouts.from_env(env)
        default = ConnectionLimits()
        return cls(
            host=env_str("HOST", "127.0.0.1", env),
            port=env_int("PORT", 8080, env, minimum=0),
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222", env),
            allowed_origins=env_list("ALLOWED_ORIGINS", env) or ["*"],
            # AUTH_TOKEN is seed 000's single static key; AUTH_TOKENS adds more (comma list)
            auth_tokens=[t for t in [env_str("AUTH_TOKEN", "", env).strip(), *env_list("AUTH_TOKENS", env)] if t],
            no_log=env_bool("NO_LOG", False, env),
            max_body_bytes=env_int("MAX_BODY_BYTES", 25 * 1024 * 1024, env, minimum=1024),
            # NATS's default max payload is 1 MiB; bodies above this go through the object store
            inline_body_bytes=env_int("INLINE_BODY_BYTES", 512 * 1024, env, minimum=1),
            reply_buffer=env_int("REPLY_BUFFER", 1024, env, minimum=8),
            max_n=env_int("MAX_N", 128, env, minimum=1),
            max_queued_per_pool=env_int("MAX_QUEUED_PER_POOL", DEFAULT_MAX_QUEUED_PER_POOL, env, minimum=1),
            edge_id=env_str("EDGE_ID", "", env) or _default_edge_id(),
            timeouts=timeouts,
            routing=RoutingConfig.from_env(env),
            public_base_url=env_str("PUBLIC_BASE_URL", "", env).rstrip("/"),
            image_url_ttl=env_float("IMAGE_URL_TTL", 3600.0, env),
            image_store_bytes=env_int("IMAGE_STORE_BYTES", 512 * 1024 * 1024, env, minimum=1024 * 1024),
            sydney_upload_max_bytes=env_int("SYDNEY_UPLOAD_MAX_BYTES", 10 * 1024 * 1024, env, minimum=1024),
            admin_key=env_str("ADMIN_KEY", "", env).strip(),
            api_key_prefix=env_str("API_KEY_PREFIX", "sb-", env).strip(),
            usage_retention_days=env_float("USAGE_RETENTION_DAYS", 30.0, env),
            limits=ConnectionLimits(
                max_header_bytes=env_int("MAX_HEADER_BYTES", default.max_header_bytes, env, minimum=1024),
                max_headers=env_int("MAX_HEADERS", default.max_headers, env, minimum=1),
                head_timeout=timeouts.request_head,
                min_body_rate=env_float("MIN_BODY_RATE", default.min_body_rate, env),
                # 2048: bounds what held heads can cost (2048 x MAX_HEADER_BYTES = 64 MiB at the
                # defaults; an idle connection costs about 5 KiB) and fits a 4096-descriptor limit
                # with room for the rest. Idle connections make room for new ones, so the cap bites
                # only when that many requests are in progress at once: an edge with long streams at
                # a high rate (say 100 new per second, 30 s each) raises it, with the descriptor limit.
                max_connections=env_int("MAX_CONNECTIONS", default.max_connections, env, minimum=1),
            ),
        )
