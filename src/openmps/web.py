"""The HTTP application: the MPS front door at ``POST /`` and the REST API under ``/v1``."""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from openmps import __version__
from openmps.errors import BusinessError
from openmps.mps.api import router as mps_router
from openmps.mps.form import json_leaves, lone_surrogate, not_unicode
from openmps.ops import router as ops_router
from openmps.rest import TAGS, RestError, business_error_handler, rest_error_handler
from openmps.rest import router as rest_router
from openmps.rest_analytics import router as analytics_router
from openmps.rest_review import router as review_router
from openmps.rest_schedules import router as schedules_router
from openmps.rest_templates import router as templates_router
from openmps.runtime import Runtime

logger = logging.getLogger(__name__)

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
        message = f"request bodies are limited to {limit} bytes"
        await _send_json(send, 413, {"error": "body_too_large", "message": message})


class JsonCheck:
    """Refuse with 422 ``invalid_json`` a ``/v1`` body that is not UTF-8, or JSON that Python's
    decoder reads but that the API can neither store nor answer: a lone UTF-16 surrogate
    (``"\\ud800"``) or a NUL (``"\\u0000"``) in a key or a string, ``NaN``, ``Infinity``,
    ``-Infinity``, or a number out of the range of a float (``1e400``); and with 400
    ``invalid_url`` a path or query that is not UTF-8 or holds a NUL. A body that is not JSON is
    left to FastAPI, which answers as it does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path != "/v1" and not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        problem = url_problem(scope.get("raw_path") or path.encode(), scope["query_string"])
        if problem is not None:
            await _send_json(send, 400, {"error": "invalid_url", "message": problem})
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left, or BodyLimit refused the body (and answered 413)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = json_problem(body) if body else None
        if problem is not None:
            await _send_json(send, 422, {"error": "invalid_json", "message": problem})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _NotFinite:
    """What ``json.loads`` reads as a float that is not finite: ``NaN``, ``Infinity`` or
    ``-Infinity`` (not JSON at all), or a number out of range (``1e400``), as written."""

    def __init__(self, text: str, *, constant: bool = True) -> None:
        self.text = text
        self.constant = constant


def _finite(text: str) -> float | _NotFinite:
    number = float(text)
    return number if math.isfinite(number) else _NotFinite(text, constant=False)


def json_problem(body: bytes) -> str | None:
    """Why the API refuses a JSON body (see :class:`JsonCheck`); None when it does not, or
    when the body is not JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not valid UTF-8 (byte {exc.start}); send JSON encoded as UTF-8"
    try:
        value = json.loads(text, parse_constant=_NotFinite, parse_float=_finite)
    except (ValueError, RecursionError):
        return None
    for where, leaf, is_key in json_leaves(value):
        name = where or "the body"
        if isinstance(leaf, _NotFinite) and leaf.constant:
            return f"{name} is {leaf.text}, which is not JSON; send a finite number"
        if isinstance(leaf, _NotFinite):
            shown = leaf.text if len(leaf.text) <= 40 else leaf.text[:40] + "..."
            return f"{name} is {shown}, a number out of the range of a double (about 1.8e308)"
        bad = lone_surrogate(leaf) if isinstance(leaf, str) else None
        if bad is not None:
            return not_unicode(name, bad, is_key=is_key)
    return None


def url_problem(raw_path: bytes, query: bytes) -> str | None:
    """Why the API refuses a URL: a path or query that is not UTF-8 once percent-decoded
    (the server would read U+FFFD in its place), or that holds a NUL character."""
    for part, raw in (("path", raw_path), ("query string", query)):
        try:
            text = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return f"the URL's {part} is not valid UTF-8 once percent-decoded"
        if "\x00" in text:
            return f"the URL's {part} contains a NUL character (%00)"
    return None


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug: answer JSON with an id the log line carries, so the two can be matched."""
    request_id = str(uuid.uuid4()).upper()
    logger.error(
        "request failed: %s %s request=%s",
        request.method,
        request.url.path,
        request_id,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(
        {
            "error": "internal_error",
            "message": f"openmps failed to handle the request; its log has request={request_id}",
        },
        status_code=500,
    )


DOCS_ASSETS = "/docs/assets"  # Swagger UI's scripts, styles and icon
DOCS_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})


def build_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="openmps",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        docs_url=None,  # served below, with Swagger UI's files from this package
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.add_middleware(JsonCheck)
    app.add_middleware(BodyLimit)  # added last, so it runs first: JsonCheck reads within it
    app.add_exception_handler(RestError, rest_error_handler)
    app.add_exception_handler(BusinessError, business_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)
    app.include_router(mps_router)
    app.include_router(rest_router)
    app.include_router(analytics_router)
    app.include_router(ops_router)
    app.include_router(templates_router)
    app.include_router(review_router)
    app.include_router(schedules_router)

    @app.get(DOCS_ASSETS + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        # Only what /docs loads: the package's folder also holds a demo page that fetches an
        # outside API.
        if name not in DOCS_FILES:
            raise RestError(404, "not_found", f"{DOCS_ASSETS}/{name} does not exist")
        return FileResponse(Path(str(swagger_ui_path)) / name)

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="openmps API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    return app
