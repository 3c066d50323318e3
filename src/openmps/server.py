"""``openmps serve``: the API and the device gateway in one process, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Generator

import uvicorn

from openmps.apps import AppCredentials
from openmps.errors import ConfigError
from openmps.logs import configure_logging
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


def _banner(settings: Settings, gateway_port: int) -> str:
    return (
        f"openmps ready: api=http://{settings.host}:{settings.port} "
        f"gateway=ws://{settings.gateway_host}:{gateway_port}/v1 "
        f"store={settings.database_url or settings.data_dir / 'openmps.db'}"
    )


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
    api, gateway = (settings.host, settings.port), (settings.gateway_host, settings.gateway_port)
    if api == gateway and settings.port != 0:
        raise ConfigError(
            f"the API and the gateway cannot share {settings.host}:{settings.port}; "
            "give them different ports (--port, --gateway-port)"
        )
    api_socket = _listen(settings.host, settings.port, "API", "--port / OPENMPS_PORT")
    try:
        runtime = await Runtime.open(settings)
    except BaseException:
        api_socket.close()
        raise
    try:
        await runtime.start()
        first = await runtime.first_app()
    except BaseException:
        api_socket.close()
        await runtime.stop()
        raise
    if first is not None:
        _print_credentials(first)
    assert runtime.gateway_port is not None
    config = uvicorn.Config(
        build_app(runtime),
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None,  # uvicorn's records go through our handler, in our format
        loop="none",
    )
    server = _Server(config, runtime)
    print(_banner(settings, runtime.gateway_port), flush=True)
    try:
        await server.serve(sockets=[api_socket])
    finally:
        await runtime.stop()


def run(settings: Settings) -> None:
    configure_logging(settings.log_format, settings.log_level)
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:
        asyncio.run(serve(settings))
