"""``create_app(runtime)``: the FastAPI application the daemon serves.

The app holds no state of its own beyond caches: everything is in the runtime's database,
so any number of replicas can serve it. CORS is open (no credentials) on the paths a
browser calls directly: Segment ingest (analytics.js sends the write key in the body) and
the on-site message endpoints; never on admin or webhook paths.
"""

from __future__ import annotations

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


def _doc_models() -> list[type[BaseModel]]:
    return [*ingest.DOC_MODELS, *site.DOC_MODELS, *admin.DOC_MODELS]


def create_app(runtime: Runtime, *, env: Mapping[str, str] | None = None) -> FastAPI:
    """The API for ``runtime``. ``env`` holds webhook secrets (default: ``os.environ``)."""
    state = ApiState.build(runtime, dict(os.environ if env is None else env))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Buffered site impressions are written before the process goes.
        await state.pending_impressions.aclose()

    app = FastAPI(
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
    # Added first, so it sits inside the CORS middleware: the site's answers get CORS too.
    app.add_middleware(site.SiteMessagesFastPath, state=state)
    app.add_middleware(ScopedCORS, prefixes=CORS_PREFIXES)

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
