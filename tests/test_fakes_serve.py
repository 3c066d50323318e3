"""``openmps fakes serve`` as a user runs it: start it, paste its commands, push offline."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from alibabacloud_mpaas20201028 import models

from tests.conftest import Tenant, eventually
from tests.test_cli import cli_env, openmps
from tests.test_e2e_push import task_rows


def start_fakes(out_dir: Path, app_id: str) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openmps",
            "fakes",
            "serve",
            "--port-base",
            "0",
            "--dir",
            str(out_dir),
            "--app-id",
            app_id,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Ready."):
            return process, lines
    process.kill()
    raise AssertionError(f"fakes serve did not get ready: {lines}")


async def test_printed_commands_point_an_app_at_the_fakes(tenant: Tenant, tmp_path: Path) -> None:
    process, lines = await asyncio.to_thread(start_fakes, tmp_path / "fakes", tenant.app_id)
    try:
        commands = [
            shlex.split(line.strip())
            for line in lines
            if line.strip().startswith("openmps channel set")
        ]
        assert [command[4] for command in commands] == [
            "apns",
            "fcm",
            "hms",
            "xiaomi",
            "oppo",
            "vivo",
        ]
        assert {p.name for p in (tmp_path / "fakes").iterdir()} == {
            "apns-key.p8",
            "apns-ca.pem",
            "fcm-service-account.json",
        }
        for command in commands:
            result = await asyncio.to_thread(openmps, *command[1:], *tenant.server.store_args())
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"{command[4]} settings stored for {tenant.app_id}")

        listed = await asyncio.to_thread(
            openmps, "channel", "list", tenant.app_id, *tenant.server.store_args()
        )
        shown = json.loads(listed.stdout)
        assert [entry["vendor"] for entry in shown] == [
            "apns",
            "fcm",
            "hms",
            "oppo",
            "vivo",
            "xiaomi",
        ]
        assert "BEGIN PRIVATE KEY" not in listed.stdout
        assert shown[0]["settings"]["private_key"] == "<hidden>"

        # An iOS device with an APNs token: the push goes to the fake APNs and is accepted.
        creds = await tenant.register("ios")
        sdk = tenant.sdk()
        await sdk.push_report_async(
            models.PushReportRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                delivery_token=creds.delivery_token,
                os_type=2,
                third_channel=1,
                third_channel_device_token="ab" * 32,
            )
        )
        await asyncio.sleep(2.1)  # routing reads an app's channel settings at most every 2 s
        response = await sdk.push_simple_async(
            models.PushSimpleRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                delivery_type=2,
                expired_seconds=600,
                title="Offline",
                content="through the fake APNs",
                target_msgkey=json.dumps({creds.delivery_token: "k-fake"}),
            )
        )
        task_id = response.body.push_result.data

        async def acked() -> bool:
            rows = await task_rows(tenant, task_id)
            return [(r["channel"], r["status_code"]) for r in rows] == [("apns", 2)]

        await eventually(acked, timeout_s=15)
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 30) == 0
