"""The edge's Starlette app: Starlette's, with a router that finds a plain route by a dict lookup.

Every request goes through the one middleware stack (services/edge/app.py). At its bottom,
Starlette's router tries each route in order: a path regex, a copy of the path parameters and a
child scope per route tried, then the method check again in the route. For a route without path
parameters that is an exact comparison of path and method, so the routes listed before any other
kind are found by `(path, method)` in a dict instead, with the same result (the same route, the
same `endpoint`, `path_params`, `route` and `router` in the scope). Everything else (a route with
parameters, a 404, a 405, a `root_path`, lifespan) goes through Starlette's own matching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send


def _exact_routes(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], Route]:
    """(path, method) -> route, for the plain routes ahead of the first route of another kind: for
    those, the first exact match in order is the route Starlette's matching would pick."""
    exact: dict[tuple[str, str], Route] = {}
    for route in routes:
        if type(route) is not Route or route.param_convertors or not route.methods:
            break  # from here on, order and patterns matter: Starlette's matching decides
        for method in route.methods:
            exact.setdefault((route.path, method), route)
    return exact


class ExactPathRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._exact = _exact_routes(self.routes)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self._exact.get((scope["path"], scope["method"]))
            if route is not None:
                if "router" not in scope:
                    scope["router"] = self
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                await route.app(scope, receive, send)
                return
        await super().app(scope, receive, send)


class EdgeApp(Starlette):
    """Starlette with `ExactPathRouter` as its router."""

    def __init__(self, *, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes=routes, **kwargs)
        self.router = ExactPathRouter(routes, lifespan=kwargs.get("lifespan"))
