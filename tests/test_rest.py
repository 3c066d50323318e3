"""The REST API's own limits."""

from __future__ import annotations

import httpx

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
