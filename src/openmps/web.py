"""The HTTP application: the MPS front door at ``POST /`` and the REST API under ``/v1``."""

from __future__ import annotations

import json

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmps import __version__
from openmps.errors import BusinessError
from openmps.mps.api import router as mps_router
from openmps.ops import router as ops_router
from openmps.rest import TAGS, RestError, business_error_handler, rest_error_handler
from openmps.rest import router as rest_router
from openmps.rest_analytics import router as analytics_router
from openmps.rest_review import router as review_router
from openmps.rest_schedules import router as schedules_router
from openmps.rest_templates import router as templates_router
from openmps.runtime import Runtime

MAX_MPS_BODY = 1024 * 1024  # an MPS form: the largest push is a few KiB
MAX_REST_BODY = 64 * 1024  # a REST JSON body (channel settings with a key file are the largest)
DESCRIPTION = """\
The native REST API of openmps, a self-hosted Mobile Push Service (docs/rest.md).

Authenticate with HTTP Basic: the app's AccessKeyId as user name, its AccessKeySecret as
password. A request the service refuses answers 400 `{"error", "message", "code"}` with the
MPS result code; a body of the wrong shape answers 422. The MPS OpenAPI (`POST /`, signed,
for the Alibaba Cloud SDKs) is served on the same port and is not described here.
"""


class BodyLimit:
    """Refuse a request body over the limit with 413, before it is read into memory."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_MPS_BODY if scope["path"] == "/" else MAX_REST_BODY
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        seen = 0
        refused = False

        async def limited() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    await self._refuse(send, limit)
                    return {"type": "http.disconnect"}  # the app stops reading here
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # after our 413 the app has nothing more to say
                await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not refused:  # after our 413, the app's complaint about the cut body is moot
                raise

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = json.dumps(
            {"error": "body_too_large", "message": f"request bodies are limited to {limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def build_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="openmps",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.add_middleware(BodyLimit)
    app.add_exception_handler(RestError, rest_error_handler)
    app.add_exception_handler(BusinessError, business_error_handler)
    app.include_router(mps_router)
    app.include_router(rest_router)
    app.include_router(analytics_router)
    app.include_router(ops_router)
    app.include_router(templates_router)
    app.include_router(review_router)
    app.include_router(schedules_router)
    return app
