"""``openmps serve``: the API and the device gateway in one process, on one event loop.

Scaled out (``--role``), a process serves only what its roles need: the API port for ``api``,
the gateway port for ``gateway``; a process without ``api`` answers ``/healthz``, ``/readyz``
and ``/metrics`` on ``ops_port`` if one is set, and otherwise listens on no HTTP port at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from openmps.apps import AppCredentials
from openmps.cluster.redis import shown_url
from openmps.errors import ConfigError
from openmps.logs import configure_logging
from openmps.ops import router as ops_router
from openmps.rest import healthz
from openmps.runtime import Runtime
from openmps.settings import Settings
from openmps.web import build_app

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, except that SIGINT and SIGTERM only ask it to stop.

    uvicorn re-raises a captured signal once ``serve()`` returns, which kills the process
    before the runtime can write waiting acks and close the store. The first signal also marks
    the runtime as stopping, so ``/readyz`` answers 503 from then on.
    """

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop_on, sig)
        if self.runtime.stopping:  # a signal came before these handlers: stop once started
            self.should_exit = True
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _stop_on(self, sig: int) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop without waiting for requests
        self.should_exit = True
        self.runtime.stopping = True


def _mark_stopping(runtime: Runtime) -> None:
    """A stop signal before the process waits for one: acted on as soon as it does."""
    runtime.stopping = True


def _banner(settings: Settings, gateway_port: int) -> str:
    return (
        f"openmps ready: api=http://{settings.host}:{settings.port} "
        f"gateway=ws://{settings.gateway_host}:{gateway_port}/v1 "
        f"store={settings.database_url or settings.data_dir / 'openmps.db'}"
    )


def _scaled_banner(settings: Settings, runtime: Runtime, http_port: int | None) -> str:
    roles = runtime.roles
    parts = [f"node={runtime.node_id}", f"roles={settings.role}"]
    if "api" in roles:
        parts.append(f"api=http://{settings.host}:{http_port}")
    elif http_port is not None:
        parts.append(f"ops=http://{settings.host}:{http_port}")
    if runtime.gateway_port is not None:
        parts.append(f"gateway=ws://{settings.gateway_host}:{runtime.gateway_port}/v1")
    parts.append(f"store={shown_url(settings.sqlalchemy_url)}")
    parts.append(f"redis={shown_url(settings.redis_url or '')}")
    return "openmps ready: " + " ".join(parts)


def build_ops_app(runtime: Runtime) -> FastAPI:
    """The HTTP app of a process without the api role: health, readiness and metrics only."""
    app = FastAPI(title="openmps node", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.include_router(ops_router)
    return app


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _listen(host: str, port: int, what: str, option: str) -> socket.socket:
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} for the {what}: {_reason(exc)}. Is another "
            f"process using it? Choose another with {option}."
        ) from None


def _print_credentials(first: AppCredentials) -> None:
    # Shown once, on the empty store's first start: the secret is not printed again.
    print("Created the default app. Keep these; the secret is not shown again:")
    for name, value in (
        ("AppId", first.app_id),
        ("WorkspaceId", first.workspace_id),
        ("AccessKeyId", first.access_key_id),
        ("AccessKeySecret", first.access_key_secret),
    ):
        print(f"  {name:<16} {value}")


async def serve(settings: Settings) -> None:
    roles = settings.roles if settings.scaled else frozenset({"api", "gateway"})
    api, gateway = (settings.host, settings.port), (settings.gateway_host, settings.gateway_port)
    if {"api", "gateway"} <= roles and api == gateway and settings.port != 0:
        raise ConfigError(
            f"the API and the gateway cannot share {settings.host}:{settings.port}; "
            "give them different ports (--port, --gateway-port)"
        )
    if "api" in roles:
        http_socket: socket.socket | None = _listen(
            settings.host, settings.port, "API", "--port / OPENMPS_PORT"
        )
    elif settings.ops_port is not None:
        http_socket = _listen(
            settings.host, settings.ops_port, "health endpoints", "--ops-port / OPENMPS_OPS_PORT"
        )
    else:
        http_socket = None
    try:
        runtime = await Runtime.open(settings)
    except BaseException:
        if http_socket is not None:
            http_socket.close()
        raise
    # From here a SIGINT or SIGTERM asks for a graceful stop, also one that arrives while the
    # runtime starts or between the ready line and the HTTP server's own handlers.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _mark_stopping, runtime)
    try:
        await runtime.start()
        # Scaled out, apps are made with `openmps app create`: API nodes starting together
        # on an empty store would each make a default app.
        first = None if settings.scaled else await runtime.first_app()
    except BaseException:
        if http_socket is not None:
            http_socket.close()
        await runtime.stop()
        raise
    if first is not None:
        _print_credentials(first)
    http_port = None if http_socket is None else int(http_socket.getsockname()[1])
    if settings.scaled:
        print(_scaled_banner(settings, runtime, http_port), flush=True)
    else:
        assert runtime.gateway_port is not None
        print(_banner(settings, runtime.gateway_port), flush=True)
    try:
        if http_socket is None:
            await _wait_for_stop(runtime)
            return
        app = build_app(runtime) if "api" in roles else build_ops_app(runtime)
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_level="warning",
            log_config=None,  # uvicorn's records go through our handler, in our format
            loop="none",
            # Scaled out, requests under way get drain_timeout_s to finish on a stop.
            timeout_graceful_shutdown=(
                max(1, round(settings.drain_timeout_s)) if settings.scaled else None
            ),
        )
        server = _Server(config, runtime)
        await server.serve(sockets=[http_socket])
    finally:
        await runtime.stop()


async def _wait_for_stop(runtime: Runtime) -> None:
    """Serve no HTTP port: wait for SIGINT or SIGTERM (the runtime's parts run meanwhile)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        runtime.stopping = True
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if runtime.stopping:  # a signal came before these handlers
        stop.set()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(settings: Settings) -> None:
    configure_logging(settings.log_format, settings.log_level)
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:
        asyncio.run(serve(settings))
