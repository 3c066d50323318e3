"""The REST API's own limits, its error shapes and its OpenAPI document."""

from __future__ import annotations

import httpx
import pytest

from openmps import __version__
from tests.conftest import Tenant


async def test_device_registration_refuses_a_huge_body_without_reading_it(tenant: Tenant) -> None:
    # Regression: a 300 MB body to this unauthenticated endpoint was read into memory (422).
    async with httpx.AsyncClient() as http:
        declared = await http.post(
            f"{tenant.server.api_url}/v1/devices",
            content=b"x" * (64 * 1024 + 1),
            headers={"content-type": "application/json"},
        )

        async def chunks() -> object:
            for _ in range(100):
                yield b"x" * 1024

        streamed = await http.post(
            f"{tenant.server.api_url}/v1/devices",
            content=chunks(),  # type: ignore[arg-type]
            headers={"content-type": "application/json"},
        )
        registered = await http.post(
            f"{tenant.server.api_url}/v1/devices",
            json={"app_id": tenant.app_id, "workspace_id": tenant.workspace_id},
        )
    too_large = {"error": "body_too_large", "message": "request bodies are limited to 65536 bytes"}
    assert (declared.status_code, declared.json()) == (413, too_large)
    assert (streamed.status_code, streamed.json()) == (413, too_large)
    assert registered.status_code == 201


async def test_mps_front_door_refuses_a_body_over_one_mebibyte(tenant: Tenant) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{tenant.server.api_url}/",
            content=b"a=" + b"x" * (1024 * 1024),
            headers={"x-acs-action": "PushSimple"},
        )
    assert (response.status_code, response.json()) == (
        413,
        {"error": "body_too_large", "message": "request bodies are limited to 1048576 bytes"},
    )


async def test_docs_page_and_openapi_document(tenant: Tenant) -> None:
    async with httpx.AsyncClient(base_url=tenant.server.api_url) as http:
        page = await http.get("/docs")
        document = await http.get("/openapi.json")
        script = await http.get("/docs/assets/swagger-ui-bundle.js")
        style = await http.get("/docs/assets/swagger-ui.css")
        missing = await http.get("/docs/assets/nothing.js")
        demo = await http.get("/docs/assets/index.html")  # the package's demo page: not served
        upwards = await http.get("/docs/assets/..%2F__init__.py")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text
    # Served by openmps itself, so the page works without internet access.
    assert "cdn" not in page.text.lower()
    assert '<script src="/docs/assets/swagger-ui-bundle.js">' in page.text
    assert '<link type="text/css" rel="stylesheet" href="/docs/assets/swagger-ui.css">' in page.text
    assert (script.status_code, style.status_code, missing.status_code) == (200, 200, 404)
    assert (demo.status_code, upwards.status_code) == (404, 404)
    assert demo.json() == {
        "error": "not_found",
        "message": "/docs/assets/index.html does not exist",
    }
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "SwaggerUIBundle" in script.text
    assert document.status_code == 200
    spec = document.json()
    assert (spec["info"]["title"], spec["info"]["version"]) == ("openmps", __version__)
    assert spec["info"]["description"].startswith("The native REST API of openmps")
    operations = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert {
        ("GET", "/healthz"),
        ("POST", "/v1/devices"),
        ("POST", "/v1/pushes"),
        ("POST", "/v1/pushes/broadcast"),
        ("POST", "/v1/bindings"),
        ("DELETE", "/v1/bindings/{user_id}"),
        ("POST", "/v1/devices/{delivery_token}/report"),
        ("GET", "/v1/devices/{target}"),
        ("POST", "/v1/messages/revoke"),
        ("GET", "/v1/messages/{msg_key}"),
        ("GET", "/v1/tasks/{task_id}"),
        ("POST", "/v1/tasks/{task_id}/revoke"),
        ("GET", "/v1/channels"),
        ("PUT", "/v1/channels/{vendor}"),
        ("DELETE", "/v1/channels/{vendor}"),
        ("PUT", "/v1/routing"),
    } <= operations
    assert "/" not in spec["paths"]  # the MPS front door is not part of this API
    assert [t["name"] for t in spec["tags"]] == [
        "pushes",
        "messages",
        "tasks",
        "devices",
        "bindings",
        "channels",
        "templates",
        "schedules",
        "review",
        "analytics",
        "health",
    ]
    assert spec["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
    push = spec["paths"]["/v1/pushes"]["post"]
    assert (push["tags"], push["security"]) == (["pushes"], [{"basic": []}])
    assert set(push["responses"]) == {"201", "400", "401", "422"}


async def test_channel_refusals_carry_the_mps_result_code(tenant: Tenant) -> None:
    auth = (tenant.creds.access_key_id, tenant.creds.access_key_secret)
    async with httpx.AsyncClient(base_url=tenant.server.api_url, auth=auth) as http:
        unknown = await http.delete("/v1/channels/bogus")
        refused = await http.put("/v1/channels/vivo", json={"settings": {"app_id": "1"}})
        policy = await http.put("/v1/routing", json={"policy": "sometimes"})
        anonymous = await http.get("/v1/channels", auth=None)
    assert (unknown.status_code, unknown.json()) == (
        400,
        {
            "error": "invalid_param",
            "message": "unknown vendor 'bogus'; one of: apns, fcm, hms, xiaomi, oppo, vivo",
            "code": 3028,
        },
    )
    assert refused.status_code == 400
    assert (refused.json()["error"], refused.json()["code"]) == ("invalid_param", 3028)
    assert policy.status_code == 422
    assert [(e["loc"], e["type"]) for e in policy.json()["detail"]] == [
        (["body", "policy"], "literal_error")
    ]
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthorized")


async def test_a_rest_bug_answers_json_with_the_id_its_log_line_has(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Second trial: a REST 500 was plain text with nothing to find it by in the log.
    import json as json_module

    from starlette.requests import Request

    from openmps.web import internal_error_handler

    scope = {"type": "http", "method": "GET", "path": "/v1/x", "headers": [], "query_string": b""}
    with caplog.at_level("ERROR", logger="openmps.web"):
        response = await internal_error_handler(Request(scope), RuntimeError("boom"))
    body = json_module.loads(bytes(response.body))
    request_id = body["message"].rsplit("=", 1)[1]
    assert (response.status_code, body) == (
        500,
        {
            "error": "internal_error",
            "message": f"openmps failed to handle the request; its log has request={request_id}",
        },
    )
    assert f"request failed: GET /v1/x request={request_id}" in caplog.text
