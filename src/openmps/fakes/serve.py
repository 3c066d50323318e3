"""``openmps fakes serve``: every fake vendor gateway in one process, with credentials to use.

Each fake listens on its own port (``port_base`` + 0..5). Credentials are generated (the APNs
signing key and CA, the FCM service account) or fixed demo values, written under ``out_dir``,
and the exact ``openmps channel set`` commands that point an app at the fakes are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openmps.fakes.apns import FakeAPNs
from openmps.fakes.fcm import FakeFCM
from openmps.fakes.huawei import FakeHuawei
from openmps.fakes.oppo import FakeOPPO
from openmps.fakes.vivo import FakeVivo
from openmps.fakes.xiaomi import FakeXiaomi

APNS_TEAM, APNS_KEY_ID, APNS_TOPIC = "FAKETEAM01", "FAKEKEY001", "com.example.app"
HMS_APP, HMS_SECRET = "100000001", "fake-hms-client-secret"
MI_SECRET, MI_PACKAGE = "fake-xiaomi-app-secret", "com.example.app"
OPPO_KEY, OPPO_MASTER = "fake-oppo-app-key", "fake-oppo-master-secret"
VIVO_ID, VIVO_KEY, VIVO_SECRET = 10004, "fake-vivo-app-key", "fake-vivo-app-secret"


async def serve_fakes(
    *, host: str, port_base: int, out_dir: Path, app_id: str, say: Callable[[str], None]
) -> None:
    """Run until SIGINT/SIGTERM."""
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    apns = FakeAPNs()
    apns.add_key(
        APNS_TEAM,
        APNS_KEY_ID,
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    )
    fcm = FakeFCM()
    huawei = FakeHuawei(credentials={HMS_APP: HMS_SECRET})
    xiaomi = FakeXiaomi(apps={MI_SECRET: MI_PACKAGE})
    oppo = FakeOPPO(app_key=OPPO_KEY, master_secret=OPPO_MASTER)
    vivo = FakeVivo(app_id=VIVO_ID, app_key=VIVO_KEY, app_secret=VIVO_SECRET)
    fakes: list[Any] = [apns, fcm, huawei, xiaomi, oppo, vivo]
    for offset, fake in enumerate(fakes):
        await fake.start(host, port_base + offset if port_base else 0)
    try:
        (out_dir / "apns-key.p8").write_text(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
        )
        (out_dir / "apns-ca.pem").write_text(apns.cert_pem)
        account, _ = fcm.new_service_account("openmps-fake-project")
        (out_dir / "fcm-service-account.json").write_text(json.dumps(account, indent=2))
        for secret in ("apns-key.p8", "fcm-service-account.json"):
            (out_dir / secret).chmod(0o600)
        urls = {
            "apns": apns.url,
            "fcm": fcm.url,
            "hms": huawei.url,
            "xiaomi": xiaomi.url,
            "oppo": oppo.base_url,
            "vivo": vivo.base_url,
        }
        say(
            "Fake vendor gateways (control: POST/DELETE {url}/__fake__/scenario, "
            "GET {url}/__fake__/received):"
        )
        for vendor, url in urls.items():
            say(f"  {vendor:<7} {url}")
        say(f"\nCredentials are in {out_dir}/. Point an app at the fakes with:")
        d = out_dir
        for line in (
            f"openmps channel set {app_id} apns team_id={APNS_TEAM} key_id={APNS_KEY_ID} "
            f"topic={APNS_TOPIC} private_key=@{d}/apns-key.p8 ca_pem=@{d}/apns-ca.pem "
            f"--base-url {urls['apns']}",
            f"openmps channel set {app_id} fcm service_account=@{d}/fcm-service-account.json "
            f"--base-url {urls['fcm']}",
            f"openmps channel set {app_id} hms app_id={HMS_APP} client_secret={HMS_SECRET} "
            f"--base-url {urls['hms']}",
            f"openmps channel set {app_id} xiaomi app_secret={MI_SECRET} "
            f"package_name={MI_PACKAGE} --base-url {urls['xiaomi']}",
            f"openmps channel set {app_id} oppo app_key={OPPO_KEY} master_secret={OPPO_MASTER} "
            f"--base-url {urls['oppo']}",
            f"openmps channel set {app_id} vivo app_id={VIVO_ID} app_key={VIVO_KEY} "
            f"app_secret={VIVO_SECRET} --base-url {urls['vivo']}",
        ):
            say(f"  {line}")
        say("\nReady. Ctrl-C stops the fakes.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for fake in fakes:
            with contextlib.suppress(Exception):
                await fake.stop()
