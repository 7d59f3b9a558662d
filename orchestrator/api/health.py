"""Operations: ``/healthz`` (the process answers), ``/readyz`` (it can do its job: the
database is reachable and its schema is the one this code needs) and ``/metrics``.

Kubernetes-style split: a failing liveness probe restarts the process, so ``/healthz``
checks nothing external (a database outage must not restart every replica); readiness
takes a replica out of the load balancer while it cannot serve.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from orchestrator.api.state import ApiState, api_state
from orchestrator.db.migrate import check_current, head_revision

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _ready(state: ApiState) -> tuple[int, dict[str, str]]:
    db = state.reader  # reads need no write lock (see state.read_engine)
    try:
        with db.connect() as conn:
            conn.execute(text("SELECT 1"))
        check_current(db)
    except Exception as exc:  # any failure means "not ready", with the reason shown
        return 503, {"status": "unavailable", "reason": str(exc).splitlines()[0][:300]}
    return 200, {"status": "ready", "schema": head_revision(db)}


@router.get(
    "/readyz",
    summary="Readiness: database reachable and schema current",
    responses={503: {"description": "Not ready; `reason` says why"}},
)
async def readyz(request: Request) -> JSONResponse:
    status, body = await run_in_threadpool(_ready, api_state(request))
    return JSONResponse(body, status_code=status)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics_registry
    data = await run_in_threadpool(generate_latest, registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
