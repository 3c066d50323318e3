"""Endpoints for whoever runs openmps: ``GET /metrics`` (Prometheus) and ``GET /readyz``.

``/healthz`` (in rest.py) says the process answers: restart it if not. ``/readyz`` says whether
it should get traffic now: started, not stopping, its store answering (and, scaled out,
Redis: docs/scale-out.md). A process without the api role serves them on ``ops_port``.
Neither needs a key and neither is in the OpenAPI schema; docs/operations.md describes them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from openmps.metrics import CONTENT_TYPE
from openmps.runtime import Runtime
from openmps.store import Store

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

STORE_CHECK_TIMEOUT_S = 2.0  # a store slower than this to answer SELECT 1 is "not ready"


async def check_store(store: Store, timeout_s: float = STORE_CHECK_TIMEOUT_S) -> str:
    """``"ok"`` when the store answers ``SELECT 1`` within ``timeout_s``, else what went wrong."""
    try:
        async with asyncio.timeout(timeout_s), store.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except TimeoutError:
        logger.warning("readiness: the store did not answer within %g s", timeout_s)
        return f"no answer within {timeout_s:g} s"
    except Exception as exc:
        logger.warning("readiness: the store failed: %s", exc)
        return f"failed: {type(exc).__name__}"
    return "ok"


async def readiness(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of ``GET /readyz``."""
    if runtime.stopping:
        # The store is being closed: asking it would only reopen a connection.
        return 503, {"status": "stopping", "checks": {"runtime": "stopping"}}
    checks = {
        "runtime": "ok" if runtime.started else "starting",
        "store": await check_store(runtime.store),
    }
    if runtime.cluster is not None:  # scaled out: nothing moves between processes without it
        checks["redis"] = await runtime.cluster.check()
    if all(value == "ok" for value in checks.values()):
        return 200, {"status": "ready", "checks": checks}
    return 503, {"status": "not_ready", "checks": checks}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    status, body = await readiness(request.app.state.runtime)
    return JSONResponse(body, status_code=status)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return Response(await runtime.metrics.scrape(), media_type=CONTENT_TYPE)
