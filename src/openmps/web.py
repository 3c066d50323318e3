"""The HTTP application: the MPS front door at ``POST /`` and the REST API under ``/v1``."""

from __future__ import annotations

from fastapi import FastAPI

from openmps import __version__
from openmps.mps.api import router as mps_router
from openmps.rest import router as rest_router
from openmps.runtime import Runtime


def build_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="openmps", version=__version__, docs_url="/docs", redoc_url=None)
    app.state.runtime = runtime
    app.include_router(mps_router)
    app.include_router(rest_router)
    return app
