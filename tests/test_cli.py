"""The ``openmps`` command, run as a child process the way an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from alibabacloud_mpaas20201028 import models
from alibabacloud_mpaas20201028.client import Client

from openmps.apps import AppCredentials
from tests.conftest import Server, Tenant
from tests.test_e2e_lifecycle import push, row, rows_become
from tests.test_e2e_push import task_rows

STEP_S = 20.0  # a child process imports the whole stack before it answers
ROW_KEYS = [
    "target",
    "msg_key",
    "device",
    "channel",
    "status_channel",
    "status_code",
    "status_name",
    "final",
    "detail",
]


def cli_env() -> dict[str, str]:
    """The environment without OPENMPS_* settings, so only the given options count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENMPS_")}


def openmps(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openmps", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )


def json_line(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    return json.loads(result.stdout)


def test_app_create_and_list(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = json_line(openmps("app", "create", "shop", "--json", "--data-dir", str(data)))
    assert list(created) == ["app_id", "workspace_id", "access_key_id", "access_key_secret"]
    assert re.fullmatch(r"ONEX[0-9A-F]{12}", created["app_id"])
    assert created["workspace_id"] == "default"
    assert re.fullmatch(r"LTAI[A-Za-z0-9]{20}", created["access_key_id"])
    assert re.fullmatch(r"[A-Za-z0-9]{30}", created["access_key_secret"])
    assert (data / "openmps.db").is_file()

    second = json_line(openmps("app", "create", "blog", "--json", "--data-dir", str(data)))
    listed = json_line(openmps("app", "list", "--json", "--data-dir", str(data)))
    assert [{k: v for k, v in app.items() if k != "created_at"} for app in listed] == [
        {
            "app_id": created["app_id"],
            "workspace_id": "default",
            "name": "shop",
            "access_key_ids": [created["access_key_id"]],
        },
        {
            "app_id": second["app_id"],
            "workspace_id": "default",
            "name": "blog",
            "access_key_ids": [second["access_key_id"]],
        },
    ]
    for app in listed:
        assert datetime.fromisoformat(app["created_at"]).utcoffset() is not None
    assert created["access_key_secret"] not in json.dumps(listed)


async def test_app_created_by_cli_serves_and_status_shows_rows(
    server: Server, tenant: Tenant
) -> None:
    """An app created by the CLI in a running server's store works at once; ``openmps status``
    shows the rows the REST API shows."""
    created = json_line(
        await asyncio.to_thread(openmps, "app", "create", "cli-app", "--json", *server.store_args())
    )
    cli_tenant = Tenant(server, AppCredentials(**created))
    device = await cli_tenant.register("android")
    token = device.delivery_token
    task_id = await push(
        cli_tenant, {token: "k-cli-1", "no-such-token": "k-cli-2"}, delivery_type=1
    )
    expected = [
        row(token, "k-cli-1", token, 0, "DeviceNotOnlineOrNoResponse", final=False),
        row(
            "no-such-token", "k-cli-2", None, 99999999, "NONE", final=True, detail="unknown_device"
        ),
    ]
    assert await task_rows(cli_tenant, task_id) == expected

    status = await asyncio.to_thread(openmps, "status", task_id, "--json", *server.store_args())
    rows = json_line(status)
    assert rows == expected
    assert [list(r) for r in rows] == [ROW_KEYS, ROW_KEYS]

    text = await asyncio.to_thread(openmps, "status", task_id, *server.store_args())
    assert text.returncode == 0
    assert [line.split() for line in text.stdout.splitlines()] == [
        [token, "k-cli-1", "own", "0", "DeviceNotOnlineOrNoResponse"],
        ["no-such-token", "k-cli-2", "own", "99999999", "NONE"],
    ]
    # The CLI works on the store, for any app; the REST view stays per app.
    async with httpx.AsyncClient() as http:
        foreign = await http.get(
            f"{server.api_url}/v1/tasks/{task_id}",
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )
    assert foreign.status_code == 404


async def read_json_line(stream: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), STEP_S)
    assert line.endswith(b"\n"), line
    decoded: dict[str, Any] = json.loads(line)
    return decoded


async def test_device_listen(server: Server, tenant: Tenant) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openmps",
        "device",
        "listen",
        "--api",
        server.api_url,
        "--gateway",
        server.gateway_url,
        "--app-id",
        tenant.app_id,
        "--workspace-id",
        tenant.workspace_id,
        "--count",
        "1",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        registered = await read_json_line(process.stdout)
        token = registered["delivery_token"]
        assert registered == {"delivery_token": token, "platform": "android"}

        sdk: Client = tenant.sdk()
        response = await sdk.push_simple_async(
            models.PushSimpleRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                delivery_type=1,
                expired_seconds=300,
                title="Hello CLI",
                content="From the SDK",
                extended_params=json.dumps({"order": "42", "kind": "ship"}),
                target_msgkey=json.dumps({token: "k-listen"}),
            )
        )
        assert response.body.result_code == "OK"
        task_id = response.body.push_result.data

        message = await read_json_line(process.stdout)
        assert list(message) == ["msg_id", "msg_key", "title", "content", "extras"]
        assert message["msg_id"].isdigit()
        assert {k: v for k, v in message.items() if k != "msg_id"} == {
            "msg_key": "k-listen",
            "title": "Hello CLI",
            "content": "From the SDK",
            "extras": {"order": "42", "kind": "ship"},
        }
        assert await asyncio.wait_for(process.wait(), STEP_S) == 0
        assert await process.stdout.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await rows_become(tenant, task_id, [row(token, "k-listen", token, 2, "Acked", final=True)])


def test_listen_refuses_unknown_platform() -> None:
    result = openmps("device", "listen", "--app-id", "ONEX000000000000", "--platform", "windows")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: --platform must be android or ios\n"


def test_listen_refuses_negative_count() -> None:
    result = openmps("device", "listen", "--app-id", "ONEX000000000000", "--count", "-1")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: --count must be 0 or more\n"


def test_status_of_unknown_task(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert openmps("app", "create", "shop", "--json", "--data-dir", str(data)).returncode == 0
    result = openmps("status", "999999", "--json", "--data-dir", str(data))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: no task 999999\n"
    # Regression: an id beyond 64 bits crashed with OverflowError.
    result = openmps("status", "99999999999999999999999", "--data-dir", str(data))
    assert (result.returncode, result.stderr) == (1, "error: no task 99999999999999999999999\n")


def test_status_with_a_mistyped_data_dir_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexist"
    result = openmps("status", "1", "--data-dir", str(missing))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: no store at {missing / 'openmps.db'}; pass the --data-dir that `openmps serve` "
        "uses (or --database-url)\n"
    )
    assert not missing.exists()


def test_app_create_refuses_an_empty_name(tmp_path: Path) -> None:
    result = openmps("app", "create", " ", "--data-dir", str(tmp_path / "data"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: the app needs a name, e.g. `openmps app create shop`\n"


def test_listen_refuses_an_http_gateway_url() -> None:
    result = openmps(
        "device", "listen", "--app-id", "ONEX000000000000", "--gateway", "http://127.0.0.1:8081/v1"
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "error: --gateway must be a ws:// or wss:// URL, got 'http://127.0.0.1:8081/v1'\n"
    )


def test_serve_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "openmps",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "data"),
            ],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
            check=False,
        )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.endswith(
        f"error: cannot listen on 127.0.0.1:{port} for the API: Address already in use. Is "
        "another process using it? Choose another with --port / OPENMPS_PORT.\n"
    )
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = openmps("serve", "--port", "0", "--gateway-port", "0", "--data-dir", str(afile))
    assert (result.returncode, result.stdout) == (2, "")
    assert (
        result.stderr.endswith(
            f"error: cannot open the store: cannot use {afile} as the data directory: File exists. "
            "Pass a writable directory with --data-dir.\n"
        )
        or "as the data directory" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    env = {**cli_env(), "OPENMPS_CONFIG": str(tmp_path / "nope.toml")}
    result = subprocess.run(
        [sys.executable, "-m", "openmps", "serve", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: invalid setting: OPENMPS_CONFIG names '{tmp_path / 'nope.toml'}', which is not "
        "a file; point it at a TOML file or unset it\n"
    )


def test_status_needs_a_number(tmp_path: Path) -> None:
    result = openmps("status", "abc", "--data-dir", str(tmp_path / "data"))
    assert (result.returncode, result.stdout) == (2, "")
    assert "Invalid value for 'task_id'" in result.stderr


def test_serve_refuses_a_vendor_concurrency_of_zero(tmp_path: Path) -> None:
    env = {**cli_env(), "OPENMPS_VENDOR_CONCURRENCY": "0"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openmps",
            "serve",
            "--port",
            "0",
            "--gateway-port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "error: vendor_concurrency must be at least 1, got 0; set OPENMPS_VENDOR_CONCURRENCY to "
        "how many vendor calls may run at once\n"
    )
