"""The admin API: seed 002's `/admin/users` routes, with their exact shapes, and `/admin/keys`.

Guarded by ADMIN_KEY: `Authorization: Bearer <ADMIN_KEY>` everywhere, or seed 002's `admin_key`
(in the body of its POSTs, in the query of its GET). Without an ADMIN_KEY every admin route is a
404, the same answer as an unknown URL: an edge that does not manage keys has no admin API, and
says nothing about one. The admin key is compared in constant time and never echoed (seed 002
echoed it in its 401); a created key is in its create response only.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs

import orjson
from nats.errors import Error as NatsError
from starlette.types import Receive, Scope, Send

from libs.errors import AuthenticationFailed, BusUnavailable, InvalidRequest, SwitchyardError
from libs.keys import KeyRecord, check_fields, valid_id
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
