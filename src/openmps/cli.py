"""The ``openmps`` command. Every option has an environment twin (``OPENMPS_...``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from openmps.errors import OpenMPSError, StoreError
from openmps.settings import Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="openmps: Mobile Push Service")
apps_cli = typer.Typer(no_args_is_help=True, help="Create and list apps and their access keys.")
device_cli = typer.Typer(no_args_is_help=True, help="Act as a device (demos and checks).")
channel_cli = typer.Typer(no_args_is_help=True, help="Vendor channel settings of an app.")
fakes_cli = typer.Typer(no_args_is_help=True, help="Fake vendor gateways for offline tests.")
review_cli = typer.Typer(no_args_is_help=True, help="Pushes waiting for approval (status -1).")
app.add_typer(apps_cli, name="app")
app.add_typer(fakes_cli, name="fakes")
app.add_typer(channel_cli, name="channel")
app.add_typer(device_cli, name="device")
app.add_typer(review_cli, name="review")

T = TypeVar("T")

DataDir = Annotated[
    Path | None,
    typer.Option(envvar="OPENMPS_DATA_DIR", help="Where the SQLite store lives [default: ./data]"),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        envvar="OPENMPS_DATABASE_URL",
        help="SQLAlchemy async URL; unset means SQLite under --data-dir",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from openmps.errors import BusinessError

    try:
        return asyncio.run(coro)
    except BusinessError as exc:  # its detail says what was wrong; the MPS code means nothing here
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    except OpenMPSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ValueError as exc:
        typer.echo(f"error: invalid setting: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(envvar="OPENMPS_HOST", help="API bind address [default: 127.0.0.1]"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(envvar="OPENMPS_PORT", help="API port [default: 8080]")
    ] = None,
    gateway_port: Annotated[
        int | None,
        typer.Option(envvar="OPENMPS_GATEWAY_PORT", help="Device gateway port [default: 8081]"),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            envvar="OPENMPS_LOG_FORMAT",
            help="Logs on stderr as text or json (one object per line) [default: text]",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            envvar="OPENMPS_LOG_LEVEL", help="debug, info, warning or error [default: info]"
        ),
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            envvar="OPENMPS_ROLE",
            help="What this process runs, comma-separated: api, gateway, worker, scheduler. "
            "Anything but all four needs --redis-url and PostgreSQL (docs/scale-out.md) "
            "[default: all four, in this process]",
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            envvar="OPENMPS_REDIS_URL",
            help="Redis shared by the processes of a scaled-out deployment; setting it "
            "scales out even with all four roles [default: none]",
        ),
    ] = None,
    redis_prefix: Annotated[
        str | None,
        typer.Option(
            envvar="OPENMPS_REDIS_PREFIX",
            help="Start of every Redis key and channel of this deployment [default: openmps]",
        ),
    ] = None,
    node_id: Annotated[
        str | None,
        typer.Option(
            envvar="OPENMPS_NODE_ID",
            help="This process's name in Redis [default: <host>-<pid>-<random>]",
        ),
    ] = None,
    ops_port: Annotated[
        int | None,
        typer.Option(
            envvar="OPENMPS_OPS_PORT",
            help="Port of /healthz, /readyz and /metrics on a process without the api role "
            "[default: none]",
        ),
    ] = None,
) -> None:
    """Run the API and the device gateway in one process (or, with --role, part of them)."""
    from openmps.server import run

    settings = _settings(
        host=host,
        port=port,
        gateway_port=gateway_port,
        data_dir=data_dir,
        database_url=database_url,
        log_format=log_format,
        log_level=log_level,
        role=role,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        node_id=node_id,
        ops_port=ops_port,
    )
    try:
        run(settings)
    except OpenMPSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


async def _open_store(settings: Settings, *, create: bool = False) -> Any:
    """The store; unless ``create``, a SQLite file that does not exist yet is an error."""
    from openmps.store import Store

    if not create and not settings.database_url:
        path = settings.data_dir / "openmps.db"
        if not path.is_file():
            raise StoreError(
                f"no store at {path}; pass the --data-dir that `openmps serve` uses "
                "(or --database-url)"
            )
    return await Store.open(settings.sqlalchemy_url)


@apps_cli.command("create")
def app_create(
    name: Annotated[str, typer.Argument(help="A name for people")],
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an app with one access key; prints the secret once."""
    from openmps.apps import create_app

    if not name.strip():
        typer.echo("error: the app needs a name, e.g. `openmps app create shop`", err=True)
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def go() -> dict[str, str]:
        store = await _open_store(settings, create=True)
        try:
            return (await create_app(store, name)).as_json()
        finally:
            await store.close()

    created = _run(go())
    if as_json:
        typer.echo(json.dumps(created))
    else:
        for key, value in created.items():
            typer.echo(f"{key:<18} {value}")


@apps_cli.command("list")
def app_list(
    as_json: AsJson = False, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """List apps and their access key ids (never secrets)."""
    from openmps.apps import list_apps

    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def go() -> list[dict[str, Any]]:
        store = await _open_store(settings)
        try:
            return [
                {
                    "app_id": a.app_id,
                    "workspace_id": a.workspace_id,
                    "name": a.name,
                    "access_key_ids": list(a.access_key_ids),
                    "created_at": a.created_at.isoformat(),
                }
                for a in await list_apps(store)
            ]
        finally:
            await store.close()

    rows = _run(go())
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(
            f"{row['app_id']}  {row['workspace_id']:<10} {row['name']:<20} "
            f"{','.join(row['access_key_ids'])}"
        )


@app.command()
def status(
    task_id: Annotated[int, typer.Argument(help="The task id PushSimple returned")],
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show one row per target of a task: device, channel and status code."""
    if not 0 < task_id < 2**63:
        typer.echo(f"error: no task {task_id}", err=True)
        raise typer.Exit(1)
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def go() -> list[dict[str, Any]] | None:
        from openmps.dispatch import Dispatcher
        from openmps.gateway.hub import Hub
        from openmps.push import Pushes
        from openmps.vendors import VendorSettings

        store = await _open_store(settings)
        try:
            pushes = Pushes(store, Dispatcher(Hub()), VendorSettings(store), max_expired_seconds=1)
            rows = await pushes.task_status(task_id, app_pk=None)
            return None if rows is None else [row.as_json() for row in rows]
        finally:
            await store.close()

    rows = _run(go())
    if rows is None:
        typer.echo(f"error: no task {task_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(
            f"{row['target']:<24} {row['msg_key']:<16} {row['channel']:<6} "
            f"{row['status_code']:>9} {row['status_name']}"
        )


@device_cli.command("listen")
def device_listen(
    app_id: Annotated[str, typer.Option(envvar="OPENMPS_APP_ID", help="The app's AppId")],
    api: Annotated[str, typer.Option(envvar="OPENMPS_API_URL", help="API base URL")] = (
        "http://127.0.0.1:8080"
    ),
    gateway: Annotated[str, typer.Option(envvar="OPENMPS_GATEWAY_URL", help="Gateway URL")] = (
        "ws://127.0.0.1:8081/v1"
    ),
    workspace_id: Annotated[str, typer.Option(envvar="OPENMPS_WORKSPACE_ID")] = "default",
    platform: Annotated[str, typer.Option(help="android or ios")] = "android",
    count: Annotated[int, typer.Option(help="Exit after N messages; 0 means never")] = 0,
    as_json: AsJson = False,
) -> None:
    """Register a device, print its delivery token, then print and ack each message."""
    from openmps.client import DeviceClient, register

    if platform not in ("android", "ios"):
        typer.echo("error: --platform must be android or ios", err=True)
        raise typer.Exit(2)
    if count < 0:
        typer.echo("error: --count must be 0 or more", err=True)
        raise typer.Exit(2)
    if not gateway.startswith(("ws://", "wss://")):
        typer.echo(f"error: --gateway must be a ws:// or wss:// URL, got {gateway!r}", err=True)
        raise typer.Exit(2)
    if not api.startswith(("http://", "https://")):
        typer.echo(f"error: --api must be an http:// or https:// URL, got {api!r}", err=True)
        raise typer.Exit(2)

    def out(obj: dict[str, Any], text: str) -> None:
        typer.echo(json.dumps(obj, ensure_ascii=False) if as_json else text)
        sys.stdout.flush()

    async def go() -> None:
        creds = await register(api, app_id=app_id, workspace_id=workspace_id, platform=platform)
        out(
            {"delivery_token": creds.delivery_token, "platform": creds.platform},
            f"delivery token: {creds.delivery_token} ({creds.platform})",
        )
        received = 0
        async with DeviceClient(gateway, creds) as device:
            async for message in device:
                received += 1
                out(
                    {
                        "msg_id": message.id,
                        "msg_key": message.msg_key,
                        "title": message.title,
                        "content": message.content,
                        "extras": message.extras,
                    },
                    f"[{message.id}] {message.title}: {message.content}",
                )
                if count and received >= count:
                    break

    with contextlib.suppress(KeyboardInterrupt):
        _run(go())


WorkspaceOpt = Annotated[str, typer.Option(envvar="OPENMPS_WORKSPACE_ID", help="WorkspaceId")]


def _parse_settings(pairs: list[str]) -> dict[str, str]:
    """``key=value`` pairs; ``key=@path`` reads the value from a file (PEM keys, JSON)."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            typer.echo(f"error: settings are key=value (or key=@file), got {pair!r}", err=True)
            raise typer.Exit(2)
        if value.startswith("@"):
            try:
                value = Path(value[1:]).read_text()
            except OSError as exc:
                typer.echo(f"error: cannot read {value[1:]!r} for {key}: {exc.strerror}", err=True)
                raise typer.Exit(2) from None
        values[key] = value
    return values


async def _with_app(settings: Settings, app_id: str, workspace_id: str, work: Any) -> Any:
    """Run ``work(store, app_pk)`` for the app named, on the store of ``settings``."""
    from openmps.apps import find_app

    store = await _open_store(settings)
    try:
        app_pk = await find_app(store, app_id, workspace_id)
        if app_pk is None:
            raise OpenMPSError(f"no app {app_id!r} in workspace {workspace_id!r}; see `app list`")
        return await work(store, app_pk)
    finally:
        await store.close()


@channel_cli.command("set")
def channel_set(
    app_id: Annotated[str, typer.Argument(help="The app's AppId")],
    vendor: Annotated[str, typer.Argument(help="apns, fcm, hms, xiaomi, oppo or vivo")],
    values: Annotated[list[str], typer.Argument(help="key=value or key=@file, repeated")],
    base_url: Annotated[
        str | None, typer.Option(help="Vendor URL override (fakes, sandboxes)")
    ] = None,
    workspace_id: WorkspaceOpt = "default",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set (replace) a vendor channel's settings; they are checked before they are stored."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    parsed = _parse_settings(values)

    async def work(store: Any, app_pk: int) -> None:
        from openmps.vendors import VendorSettings

        await VendorSettings(store).set(app_pk, vendor, parsed, base_url=base_url)

    _run(_with_app(settings, app_id, workspace_id, work))
    typer.echo(f"{vendor} settings stored for {app_id} (a running server uses them within 5 s)")


@channel_cli.command("list")
def channel_list(
    app_id: Annotated[str, typer.Argument(help="The app's AppId")],
    workspace_id: WorkspaceOpt = "default",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show an app's vendor channel settings, secrets hidden."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def work(store: Any, app_pk: int) -> Any:
        from openmps.vendors import VendorSettings

        return await VendorSettings(store).describe(app_pk)

    typer.echo(json.dumps(_run(_with_app(settings, app_id, workspace_id, work)), indent=2))


@channel_cli.command("policy")
def channel_policy(
    app_id: Annotated[str, typer.Argument(help="The app's AppId")],
    policy: Annotated[str, typer.Argument(help="own_first (default) or vendor_first")],
    workspace_id: WorkspaceOpt = "default",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Choose how devices with a vendor token are reached."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def work(store: Any, app_pk: int) -> None:
        from openmps.vendors import VendorSettings

        await VendorSettings(store).set_policy(app_pk, policy)

    _run(_with_app(settings, app_id, workspace_id, work))
    typer.echo(f"routing policy of {app_id}: {policy}")


@review_cli.command("rule")
def review_rule(
    app_id: Annotated[str, typer.Argument(help="The app's AppId")],
    rule: Annotated[str, typer.Argument(help="none, broadcast, batch or all")],
    workspace_id: WorkspaceOpt = "default",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Choose which pushes of an app wait for approval (status -1) before they go out."""
    from openmps.review import Reviews

    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def work(store: Any, app_pk: int) -> None:
        await Reviews(store, None).set_rule(app_pk, rule)

    _run(_with_app(settings, app_id, workspace_id, work))
    typer.echo(f"review rule of {app_id}: {rule}")


@review_cli.command("list")
def review_list(
    app_id: Annotated[str, typer.Argument(help="The app's AppId")],
    workspace_id: WorkspaceOpt = "default",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List the app's pushes waiting for approval, as JSON."""
    from openmps.review import Reviews

    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def work(store: Any, app_pk: int) -> Any:
        reviews = Reviews(store, None)
        held = [task.as_json() for task in await reviews.held(app_pk)]
        return {"rule": await reviews.rule(app_pk), "held": held}

    typer.echo(json.dumps(_run(_with_app(settings, app_id, workspace_id, work)), indent=2))


def _decide(app_id: str, task_id: str, workspace_id: str, settings: Settings, approve: bool) -> int:
    from openmps.ids import parse_id
    from openmps.review import Reviews

    number = parse_id(task_id)
    if number is None:
        typer.echo(f"error: a task id is a number, got {task_id!r}", err=True)
        raise typer.Exit(2)

    async def work(store: Any, app_pk: int) -> int:
        reviews = Reviews(store, None)
        if approve:
            return await reviews.approve(app_pk, number)
        return await reviews.reject(app_pk, number)

    count: int = _run(_with_app(settings, app_id, workspace_id, work))
    return count


@review_cli.command("approve")
def review_approve(
    app_id: Annotated[str, typer.Argument(help="The app's AppId")],
    task_id: Annotated[str, typer.Argument(help="The held task's id")],
    workspace_id: WorkspaceOpt = "default",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Approve a held push; the running server sends it within a second or two."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _decide(app_id, task_id, workspace_id, settings, True)
    typer.echo(f"task {task_id} approved; the running server sends it on its next sweep (~1 s)")


@review_cli.command("reject")
def review_reject(
    app_id: Annotated[str, typer.Argument(help="The app's AppId")],
    task_id: Annotated[str, typer.Argument(help="The held task's id")],
    workspace_id: WorkspaceOpt = "default",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Reject a held push: it is never sent, its targets end final with status -1."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    stopped = _decide(app_id, task_id, workspace_id, settings, False)
    typer.echo(f"task {task_id} rejected: {stopped} deliveries will never be sent")


@fakes_cli.command("serve")
def fakes_serve(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port_base: Annotated[
        int,
        typer.Option(
            help="First port: APNs, FCM, Huawei, Xiaomi, OPPO, vivo take it and the next five; "
            "0 picks free ports"
        ),
    ] = 9100,
    out_dir: Annotated[
        Path, typer.Option("--dir", help="Where the generated credentials are written")
    ] = Path("data/fakes"),
    app_id: Annotated[str, typer.Option(help="AppId shown in the printed commands")] = "APP_ID",
) -> None:
    """Run fake APNs, FCM, Huawei, Xiaomi, OPPO and vivo gateways until Ctrl-C."""
    from openmps.fakes.serve import serve_fakes

    def say(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()

    try:
        asyncio.run(
            serve_fakes(host=host, port_base=port_base, out_dir=out_dir, app_id=app_id, say=say)
        )
    except OSError as exc:
        typer.echo(f"error: cannot start the fakes: {exc}; try another --port-base", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    app()
