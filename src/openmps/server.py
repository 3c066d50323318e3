"""``openmps serve``: the API and the device gateway in one process, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Generator

import uvicorn

from openmps.runtime import Runtime
from openmps.settings import Settings
from openmps.web import build_app

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, except that SIGINT and SIGTERM only ask it to stop.

    uvicorn re-raises a captured signal once ``serve()`` returns, which kills the process
    before the runtime can write waiting acks and close the store.
    """

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


def _banner(settings: Settings, gateway_port: int) -> str:
    return (
        f"openmps ready: api=http://{settings.host}:{settings.port} "
        f"gateway=ws://{settings.gateway_host}:{gateway_port}/v1 "
        f"store={settings.database_url or settings.data_dir / 'openmps.db'}"
    )


async def serve(settings: Settings) -> None:
    runtime = await Runtime.open(settings)
    first = await runtime.first_app()
    if first is not None:
        # Shown once, on the empty store's first start: the secret is not stored anywhere
        # the service would print it again.
        print("Created the default app. Keep these; the secret is not shown again:")
        for name, value in (
            ("AppId", first.app_id),
            ("WorkspaceId", first.workspace_id),
            ("AccessKeyId", first.access_key_id),
            ("AccessKeySecret", first.access_key_secret),
        ):
            print(f"  {name:<16} {value}")
    await runtime.start()
    assert runtime.gateway_port is not None
    config = uvicorn.Config(
        build_app(runtime),
        host=settings.host,
        port=settings.port,
        lifespan="off",
        access_log=False,
        log_level="warning",
        loop="none",
    )
    server = _Server(config)
    print(_banner(settings, runtime.gateway_port), flush=True)
    try:
        await server.serve()
    finally:
        await runtime.stop()
    if not server.started:
        raise SystemExit(f"the API could not listen on {settings.host}:{settings.port}")


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:
        asyncio.run(serve(settings))
