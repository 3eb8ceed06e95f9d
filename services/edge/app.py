"""The edge's app factory: routes, middleware, and the NATS lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from libs import secrets
from libs.bus import connect, ensure_body_store, ensure_image_store, ensure_job_stream
from libs.gc_tuning import settle_after_startup
from services.edge.asgi_io import header
from services.edge.dispatch import Dispatcher
from services.edge.keys import EdgeKeyStore, ManagedKeys
from services.edge.limits import RATE_LIMIT_HEADERS, start_limits
from services.edge.metrics import EdgeMetrics
from services.edge.middleware import BearerAuth, RequestContext, StaticKeyStore
from services.edge.router import EdgeApp
from services.edge.routes.admin import (
    DisableKey,
    Keys,
    KeyUsage,
    OneKey,
    Pools,
    UsersAdd,
    UsersDelete,
    UsersList,
)
from services.edge.routes.agents import ApiAsk, ApiConnections
from services.edge.routes.chatgpt_web import CALLS, ChatGPTWebRoute
from services.edge.routes.generation import GenerationRoute
from services.edge.routes.health import Health, Metrics, Ready
from services.edge.routes.images import ImageFile
from services.edge.routes.models import GetModel, ListModels
from services.edge.routes.openapi import OpenAPIRoute
from services.edge.routes.sydney import ChatStream, ImageCreate, ImageUpload
from services.edge.routes.unary import UnaryRoute, UnarySpec
from services.edge.routing import RoutingTable
from services.edge.settings import EdgeSettings
from services.edge.state import EdgeState
from services.edge.usage import UsageRecorder, ensure_usage_stream
from services.edge.usage_hourly import HourlyAggregator, ensure_hourly_bucket
from services.edge.validation import (
    validate_embedding_request,
    validate_image_request,
    validate_moderation_request,
)

log = logging.getLogger("switchyard.edge")


async def _http_error(metrics: EdgeMetrics, request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):  # no route, or not this method: by method, never by path
        metrics.count_unmatched(request.method, exc.status_code)
    code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None
    message = f"Unknown request URL: {request.method} {request.url.path}." if exc.status_code == 404 else exc.detail
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
        status_code=exc.status_code, headers=exc.headers,
    )


class CorsWhenNeeded:
    """Starlette's CORS middleware, for the requests it has anything to do for.

    Every route goes through one middleware stack (a middleware added to `create_app` sees every
    request). Starlette's CORSMiddleware wraps `send` for every request, and adds `Vary: Origin`
    even when no `Origin` header came: for a POST without one (SDKs, servers: the generation
    traffic) there is nothing to allow and nothing a cache may store, so such a request goes
    straight on and its every streamed chunk skips the wrapper. Browsers (an `Origin`), preflights
    and GETs take the full CORS path.
    """

    def __init__(self, app: ASGIApp, /, **cors: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"] != "POST" or header(scope, b"origin") is not None):
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)


# OpenAI's own default when a moderation request names no model
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
_MODERATION_HINT = (
    " No worker serves it for /v1/moderations: give openai-worker an upstream that offers moderations "
    "(OPENAI_MODERATION_MODELS, or moderation_models in OPENAI_WORKER_CONFIG)."
)


def _moderation_model(state: EdgeState) -> str:
    """OpenAI's default where a worker serves it, else the one model served for moderations."""
    served = state.routing.models_for("moderation")
    if DEFAULT_MODERATION_MODEL in served or not served:
        return DEFAULT_MODERATION_MODEL  # not served: its 404 says how to configure one
    return served[0]


def unary_specs(settings: EdgeSettings) -> dict[str, UnarySpec]:
    """path -> how it is answered, for the routes that answer with one result."""
    return {
        "/v1/embeddings": UnarySpec("embedding", "embeddings", validate_embedding_request),
        "/v1/images/generations": UnarySpec(
            "image", "images.generations", lambda body: validate_image_request(body, max_n=settings.max_n)),
        "/v1/moderations": UnarySpec(
            "moderation", "moderations", validate_moderation_request, default_model=_moderation_model,
            not_found_hint=_MODERATION_HINT),
    }


def chatgpt_routes(state: EdgeState) -> list[Route]:
    """go-chatgpt-api's routes (seed 003), at the root as it served them; a literal path before the
    `{id}` route it would otherwise match. POST on the PATCH routes: for clients that cannot PATCH."""
    def route(path: str, call: str, methods: list[str]) -> Route:
        return Route(path, ChatGPTWebRoute(state, CALLS[call]), methods=methods)

    return [
        route("/conversations", "list", ["GET"]),
        route("/conversations", "hide_all", ["PATCH", "POST"]),
        route("/conversation", "turn", ["POST"]),
        route("/conversation/message_feedback", "feedback", ["POST"]),
        route("/conversation/gen_title/{id}", "gen_title", ["POST"]),
        route("/conversation/{id}", "get", ["GET"]),
        route("/conversation/{id}", "update", ["PATCH", "POST"]),
        route("/auth/login", "login", ["POST"]),
    ]


def sydney_routes(state: EdgeState) -> list[Route]:
    """SydneyQt's web API (seed 000), at the root as it served it."""
    return [
        Route("/chat/stream", ChatStream(state), methods=["POST"]),
        Route("/image/upload", ImageUpload(state), methods=["POST"]),
        Route("/image/create", ImageCreate(state), methods=["POST"]),
    ]


def admin_routes(settings: EdgeSettings, managed: ManagedKeys, js: Callable[[], JetStreamContext]) -> list[Route]:
    """Seed 002's /admin/users routes, the /admin/keys REST API and the pools' view (routes/admin.py)."""
    admin_key = settings.admin_key
    return [
        Route("/admin/users/add", UsersAdd(admin_key, managed), methods=["POST"]),
        Route("/admin/users/delete", UsersDelete(admin_key, managed), methods=["POST"]),
        Route("/admin/users", UsersList(admin_key, managed), methods=["GET"]),
        Route("/admin/keys", Keys(admin_key, managed), methods=["GET", "POST"]),
        Route("/admin/keys/{id}", OneKey(admin_key, managed), methods=["GET", "PATCH", "DELETE"]),
        Route("/admin/keys/{id}/disable", DisableKey(admin_key, managed), methods=["POST"]),
        Route("/admin/keys/{id}/usage", KeyUsage(admin_key, managed, js), methods=["GET"]),
        Route("/admin/pools", Pools(admin_key, managed, js), methods=["GET"]),
    ]


def create_app(settings: EdgeSettings) -> tuple[ASGIApp, EdgeState]:
    state = EdgeState(settings, RoutingTable(settings.routing), EdgeMetrics(CollectorRegistry()))
    managed = ManagedKeys(settings.api_key_prefix)
    keys = EdgeKeyStore(StaticKeyStore(settings.auth_tokens), managed, admin_key=bool(settings.admin_key))
    if settings.admin_key:
        secrets.hold(settings.admin_key)  # never in a log line
    resyncs: set[asyncio.Task[None]] = set()
    usage = UsageRecorder(settings.edge_id, state.metrics.registry)
    aggregator = HourlyAggregator()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if keys.may_run_open():  # said before connecting: a start that hangs on NATS says it too
            log.warning("AUTH_TOKEN is not set: the API is open to anyone who can reach it "
                        "(until a managed key exists: python -m tools.keys create)")
        async def recreate() -> None:
            # at start-up, and again after a reconnect: a restarted server has lost memory streams
            js = nc.jetstream()
            t = settings.timeouts
            # de-duplication must outlast a blind job's confirmation (Dispatcher.confirm); JetStream
            # wants it no longer than the stream's max_age
            max_age = max(60.0, t.queue_wait * 4)
            await ensure_job_stream(js, max_age=max_age, max_per_pool=settings.max_queued_per_pool,
                                     duplicate_window=min(max_age, max(2.0, 2 * (t.confirm_window + t.publish_ack))))
            await ensure_body_store(js, ttl=settings.timeouts.total + 60)
            await ensure_image_store(js, ttl=settings.image_url_ttl, max_bytes=settings.image_store_bytes)
            await ensure_usage_stream(js, settings.usage_retention_days)

        async def on_reconnect() -> None:
            # the keys' watch died with the old server's consumers: mirrored again, in the background
            # (the old mirror serves meanwhile)
            task = asyncio.create_task(managed.resync(nc.jetstream()), name="api keys resync")
            resyncs.add(task)
            task.add_done_callback(resyncs.discard)
            dispatcher = getattr(state, "dispatcher", None)
            if dispatcher is None:  # still starting
                await recreate()
                return
            await dispatcher.restore(recreate)

        nc = await connect(settings.nats_url, name=settings.edge_id, on_reconnect=on_reconnect)
        await recreate()
        await managed.start(nc.jetstream())
        state.ledger.limiter = limiter = await start_limits(nc.jetstream(), settings.edge_id, state.metrics.registry)
        state.dispatcher = Dispatcher(
            nc, state.routing, settings.timeouts, state.metrics, edge_id=settings.edge_id,
            inline_limit=settings.inline_body_bytes, reply_buffer=settings.reply_buffer,
        )
        await state.dispatcher.start()
        usage.start(nc.jetstream())
        aggregator.start(nc.jetstream(), await ensure_hourly_bucket(nc.jetstream(), settings.usage_retention_days))
        state.ledger.usage = usage
        settle_after_startup()
        log.info("edge %s ready", settings.edge_id)
        try:
            yield
        finally:
            state.draining = True
            await state.dispatcher.stop()
            await limiter.stop()
            await usage.close(within=min(5.0, settings.timeouts.drain))  # the finished requests' records
            await aggregator.stop(within=5.0)
            for task in list(resyncs):
                task.cancel()
            await managed.stop()
            with contextlib.suppress(Exception):
                await nc.drain()

    routes = [
        # the router tries routes in order: the generation routes, nearly all the traffic, first
        Route("/v1/chat/completions", GenerationRoute(state, "chat"), methods=["POST"]),
        Route("/v1/completions", GenerationRoute(state, "completion"), methods=["POST"]),
        *(Route(path, UnaryRoute(state, spec), methods=["POST"]) for path, spec in unary_specs(settings).items()),
        Route("/", Health(), methods=["GET", "HEAD"]),
        Route("/healthz", Health(), methods=["GET", "HEAD"]),
        Route("/readyz", Ready(state), methods=["GET", "HEAD"]),
        Route("/metrics", Metrics(state), methods=["GET"]),
        Route("/v1/models", ListModels(state), methods=["GET"]),
        Route("/v1/models/{model:path}", GetModel(state), methods=["GET"]),
        Route("/images/{name}", ImageFile(state), methods=["GET", "HEAD"]),
        Route("/openapi.json", OpenAPIRoute(settings.max_n), methods=["GET"]),
        *chatgpt_routes(state),
        *sydney_routes(state),
        *admin_routes(settings, managed, usage.js),
        Route("/api/ask", ApiAsk(state), methods=["POST"]),
        Route("/api/connections", ApiConnections(state, settings.admin_key), methods=["GET"]),
    ]
    middleware = [
        Middleware(
            CorsWhenNeeded, allow_origins=settings.allowed_origins, allow_methods=["*"], allow_headers=["*"],
            expose_headers=["x-request-id", "retry-after", "retry-after-ms", *RATE_LIMIT_HEADERS],
        ),
        Middleware(RequestContext, log_requests=not settings.no_log),
        Middleware(BearerAuth, keys=keys, metrics=state.metrics, admin_key=settings.admin_key),
    ]
    app = EdgeApp(routes=routes, middleware=middleware, lifespan=lifespan,
                  exception_handlers={HTTPException: functools.partial(_http_error, state.metrics)})
    return app, state
