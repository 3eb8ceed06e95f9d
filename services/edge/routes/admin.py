"""The admin API: seed 002's `/admin/users` routes, with their exact shapes, and `/admin/keys`.

Guarded by ADMIN_KEY: `Authorization: Bearer <ADMIN_KEY>` everywhere, or seed 002's `admin_key`
(in the body of its POSTs, in the query of its GET). Without an ADMIN_KEY every admin route is a
404, the same answer as an unknown URL: an edge that does not manage keys has no admin API, and
says nothing about one. The admin key is compared in constant time and never echoed (seed 002
echoed it in its 401); a created key is in its create response only.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from starlette.types import Receive, Scope, Send

from libs.account_pool.reader import read_pools, view_json
from libs.errors import AuthenticationFailed, BusUnavailable, InvalidRequest, SwitchyardError
from libs.keys import KeyRecord, check_fields, valid_id
from libs.usage import USAGE_DEFAULT_LIMIT, USAGE_DEFAULT_PERIOD, USAGE_MAX_LIMIT, instant
from libs.usage_query import read_hourly, read_records
from services.edge.asgi_io import header, parse_json_object, read_body, send_error, send_json
from services.edge.keys import ManagedKeys

ADMIN_PREFIX = "/admin/"
_MAX_BODY = 64 * 1024  # an admin body is a few fields


# the bus could not take or give the write (NATS away, JetStream not answering in time)
_BUS_ERRORS = (NatsError, TimeoutError)


class _NotFound(Exception):
    """A 404 in OpenAI's shape. Not a SwitchyardError: those are the bus's error codes (libs/errors.py),
    and these two never travel on it."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _key_not_found(key_id: str) -> _NotFound:
    return _NotFound(f"No API key with id '{key_id}'.", "key_not_found", "id")


class _AdminRoute:
    def __init__(self, admin_key: str, keys: ManagedKeys) -> None:
        self._admin_key = admin_key.encode()
        self.keys = keys

    def _is_admin(self, given: str | None) -> bool:
        return bool(self._admin_key) and given is not None and hmac.compare_digest(given.encode(), self._admin_key)

    def _bearer(self, scope: Scope) -> str | None:
        raw = (header(scope, b"authorization") or b"").decode("latin-1")
        scheme, _, token = raw.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._admin_key:
            # the router's own answer to an unknown URL (app._http_error)
            unknown = _NotFound(f"Unknown request URL: {scope['method']} {scope['path']}.", "not_found")
            await send_json(send, 404, unknown.body)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


# ---- seed 002's routes: its bodies, its errors ------------------------------------------------

_BAD_BODY = {"error": "Invalid request body"}
_BAD_KEY = {"error": "Invalid admin key"}


class _SeedRoute(_AdminRoute):
    failed = "Failed to write to the database"  # seed 002's 500, by route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except _BUS_ERRORS:
            await send_json(send, 500, {"error": self.failed})

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> dict[str, Any] | None:
        """The JSON body with an authorised admin key, else None with seed 002's 400 or 401 sent."""
        try:
            raw = await read_body(receive, _MAX_BODY)
            body = orjson.loads(raw) if raw.strip() or self._bearer(scope) is None else {}
        except (SwitchyardError, orjson.JSONDecodeError):
            body = None
        if not isinstance(body, dict):
            await send_json(send, 400, _BAD_BODY)
            return None
        given = body.get("admin_key")
        if not self._is_admin(given if isinstance(given, str) else None) and not self._is_admin(self._bearer(scope)):
            await send_json(send, 401, _BAD_KEY)
            return None
        return body


class UsersAdd(_SeedRoute):
    """POST /admin/users/add `{admin_key}` → `{user_id, token}`: a new API key, shown once."""

    failed = "Failed to insert user_id and token into database"

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._body(scope, receive, send) is None:
            return
        key, record, revision = await self.keys.admin.create({})
        self.keys.apply(record.id, revision, record)
        await send_json(send, 200, {"user_id": record.id, "token": key})


class UsersDelete(_SeedRoute):
    """POST /admin/users/delete `{admin_key, user_id}` → `{"message": "User deleted"}`, also for an
    unknown id (seed 002's delete affected zero rows and said so)."""

    failed = "Failed to delete user from database"

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._body(scope, receive, send)
        if body is None:
            return
        user_id = body.get("user_id")
        if not isinstance(user_id, str):
            await send_json(send, 400, _BAD_BODY)
            return
        await _delete(self.keys, user_id)
        await send_json(send, 200, {"message": "User deleted"})


class UsersList(_AdminRoute):
    """GET /admin/users?admin_key=… → `{users: [{user_id, token}]}`, `{"users": null}` with none;
    only hashes are stored, so `token` is masked (`sb-…abcd`)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = parse_qs(scope["query_string"].decode("latin-1")).get("admin_key", [None])[0]
        if not self._is_admin(given) and not self._is_admin(self._bearer(scope)):
            await send_json(send, 401, _BAD_KEY)
            return
        records = sorted(self.keys.by_id.values(), key=lambda r: r.created)
        users = [{"user_id": r.id, "token": r.masked()} for r in records] or None
        await send_json(send, 200, {"users": users})


async def _delete(keys: ManagedKeys, key_id: str) -> bool:
    if not valid_id(key_id) or not await keys.admin.delete(key_id):
        return False
    keys.apply(key_id, keys.last_revision(key_id) + 1, None)  # gone here at once; the watch tells the rest
    return True


# ---- /admin/keys: the fuller REST API, OpenAI-style errors ----------------------------------


class _KeysRoute(_AdminRoute):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._admin_key and not self._is_admin(self._bearer(scope)):
            await send_error(send, AuthenticationFailed("Invalid admin key. Use 'Authorization: Bearer ADMIN_KEY'."))
            return
        try:
            await super().__call__(scope, receive, send)
        except SwitchyardError as err:
            await send_error(send, err)
        except _NotFound as err:
            await send_json(send, 404, err.body)
        except _BUS_ERRORS:
            await send_error(send, BusUnavailable("The key store (NATS) did not answer; try again.",
                                                  retry_after=1.0))

    async def _fields(self, receive: Receive) -> dict[str, Any]:
        body = parse_json_object(await read_body(receive, _MAX_BODY))
        wrong = check_fields(body)
        if wrong is not None:
            raise InvalidRequest(f"Unknown field or invalid value: '{wrong}'.", param=wrong)
        if "expires_at" in body and body["expires_at"] is not None:
            body["expires_at"] = float(body["expires_at"])
        return body

    def _record(self, scope: Scope) -> KeyRecord:
        key_id = scope["path_params"]["id"]
        record = self.keys.by_id.get(key_id)
        if record is None:
            raise _key_not_found(key_id)
        return record

    async def _update(self, send: Send, record: KeyRecord, fields: dict[str, Any]) -> None:
        updated = await self.keys.admin.update(record.id, fields)
        if updated is None:
            raise _key_not_found(record.id)
        self.keys.apply(record.id, updated[1], updated[0])
        await send_json(send, 200, updated[0].public())


class Keys(_KeysRoute):
    """GET /admin/keys: every key, masked; POST /admin/keys: a new key, shown in this response only."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            records = sorted(self.keys.by_id.values(), key=lambda r: r.created)
            await send_json(send, 200, {"object": "list", "data": [r.public() for r in records]})
            return
        key, record, revision = await self.keys.admin.create(await self._fields(receive))
        self.keys.apply(record.id, revision, record)
        await send_json(send, 200, {**record.public(), "key": key})


class OneKey(_KeysRoute):
    """GET, PATCH (update fields) and DELETE /admin/keys/{id}."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = self._record(scope)
        method = scope["method"]
        if method == "GET":
            await send_json(send, 200, record.public())
        elif method == "PATCH":
            await self._update(send, record, await self._fields(receive))
        else:
            await _delete(self.keys, record.id)
            await send_json(send, 200, {"id": record.id, "object": "api_key.deleted", "deleted": True})


class DisableKey(_KeysRoute):
    """POST /admin/keys/{id}/disable: the key stops working on every edge; PATCH enabled=true undoes it."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._update(send, self._record(scope), {"enabled": False})


# ---- usage and the account pools: read-only views -------------------------------------------

def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


class KeyUsage(_KeysRoute):
    """GET /admin/keys/{id}/usage?start=&end=&group=hour&limit=: a key's usage records over a
    period (default the last 24 h), or its hourly aggregates per model with group=hour.

    Any key id answers, not only the managed keys that exist now: `static-<n>` (the n-th of
    AUTH_TOKEN/AUTH_TOKENS), `open` (an edge without keys), and a deleted key's id, whose records
    outlive it until the retention ends."""

    def __init__(self, admin_key: str, keys: ManagedKeys, js: Callable[[], JetStreamContext]) -> None:
        super().__init__(admin_key, keys)
        self._js = js

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_id = scope["path_params"]["id"]
        if not valid_id(key_id):
            raise _key_not_found(key_id)
        query = parse_qs(scope["query_string"].decode("latin-1"))
        now = time.time()
        end_raw, start_raw = _one(query, "end"), _one(query, "start")
        end = instant(end_raw, "end") if end_raw else now
        start = instant(start_raw, "start") if start_raw else end - USAGE_DEFAULT_PERIOD
        if start >= end:
            raise InvalidRequest("'start' must be before 'end'.", param="start")
        group = _one(query, "group")
        period = {"key": key_id, "start": start, "end": end}
        if group == "hour":
            hours = await read_hourly(self._js(), key_id, start, end)
            await send_json(send, 200, {"object": "list", **period, "group": "hour", "data": hours})
            return
        if group is not None:
            raise InvalidRequest("'group' may only be 'hour' (or absent: the records).", param="group")
        limit = _limit(_one(query, "limit"))
        records, more = await read_records(self._js(), key_id, start, end, limit)
        await send_json(send, 200, {"object": "list", **period, "data": records, "has_more": more})


def _limit(raw: str | None) -> int:
    if raw is None:
        return USAGE_DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= USAGE_MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {USAGE_MAX_LIMIT}.", param="limit")
    return limit


class Pools(_KeysRoute):
    """GET /admin/pools: every web pool's accounts and their shared state (read-only; no secret:
    the bucket holds names, times and reasons only)."""

    def __init__(self, admin_key: str, keys: ManagedKeys, js: Callable[[], JetStreamContext]) -> None:
        super().__init__(admin_key, keys)
        self._js = js

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        pools = await read_pools(self._js())
        data = [{"pool": name, "accounts": [view_json(v) for v in views]} for name, views in pools.items()]
        await send_json(send, 200, {"object": "list", "data": data})
