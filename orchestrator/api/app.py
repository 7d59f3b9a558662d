"""``create_app(runtime)``: the FastAPI application the daemon serves.

The app holds no state of its own beyond caches: everything is in the runtime's database,
so any number of replicas can serve it. CORS is open (no credentials) on the paths a
browser calls directly: Segment ingest (analytics.js sends the write key in the body) and
the on-site message endpoints; never on admin or webhook paths.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.api import admin, errors, health, ingest, reactions, site, webhooks
from orchestrator.api.metrics import build_registry
from orchestrator.api.state import ApiState
from orchestrator.runtime import Runtime

CORS_PREFIXES = ("/v1/site/", "/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/batch")

DESCRIPTION = """\
The parcours HTTP API: Segment-spec event ingest, email reactions (open pixel, click
redirect, one-click unsubscribe), provider webhooks, on-site messages, administration and
operations. Every error is JSON `{"success": false, "code", "message", "field"}`.
See docs/api.md for curl examples.
"""


class ScopedCORS:
    """Starlette's CORS middleware, applied only under ``prefixes``."""

    def __init__(self, app: ASGIApp, prefixes: Sequence[str]) -> None:
        self.app = app
        self.prefixes = tuple(prefixes)
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Site-Key"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(self.prefixes):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class ParcoursAPI(FastAPI):
    """FastAPI, with ``GET /v1/site/messages`` answered before FastAPI's own work.

    That request comes with every page a shop renders and has a latency target (p99 under
    10 ms at 100 concurrent clients). Inside FastAPI every request pays, before routing,
    the native OpenTelemetry check (FastAPI >= 0.16x looks up three global providers, which
    read environment variables), Starlette's error and CORS middleware wrapping ``send``,
    and the middleware stack's calls. :func:`site.answer_messages` gives the same answer,
    CORS headers included, without them. A bug in it propagates to uvicorn, which answers
    500 as Starlette's error middleware would. Not lost: parcours configures no
    OpenTelemetry; its metrics are the Prometheus ones on ``/metrics``.
    """

    #: Set by :func:`create_app`; None answers the site through FastAPI like any request.
    site_state: ApiState | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.site_state is not None
            and scope["type"] == "http"
            and scope["path"] == site.MESSAGES_PATH
            and scope["method"] == "GET"
        ):
            await site.answer_messages(self.site_state, scope, send)
            return
        await super().__call__(scope, receive, send)


def _doc_models() -> list[type[BaseModel]]:
    return [*ingest.DOC_MODELS, *site.DOC_MODELS, *admin.DOC_MODELS]


def create_app(runtime: Runtime, *, env: Mapping[str, str] | None = None) -> ParcoursAPI:
    """The API for ``runtime``. ``env`` holds webhook secrets (default: ``os.environ``)."""
    state = ApiState.build(runtime, dict(os.environ if env is None else env))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # What exists now (modules, the app, the runtime) lives as long as the server:
        # freezing it keeps Python's full collections from walking it all. Unfrozen, each
        # walked ~150,000 objects for 20-55 ms, every request in the process waiting:
        # that was the p99 of GET /v1/site/messages under load (docs/benchmarks.md).
        # Unfrozen at shutdown, so an app started and stopped in-process (tests) leaves
        # nothing uncollectable behind.
        gc.freeze()
        try:
            yield
            # Buffered site impressions are written before the process goes.
            await state.pending_impressions.aclose()
            if state.site_reader is not None:
                state.site_reader.close()
        finally:
            gc.unfreeze()

    app = ParcoursAPI(
        lifespan=lifespan,
        title="parcours",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.parcours = state
    app.state.metrics_registry, app.state.metrics_collector = build_registry(state)
    errors.install(app)
    for module in (ingest, reactions, webhooks, site, admin, health):
        app.include_router(module.router)
    app.add_middleware(ScopedCORS, prefixes=CORS_PREFIXES)
    app.site_state = state

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in _doc_models():
            doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(doc.pop("$defs", {}))
            components[model.__name__] = doc
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
