"""What every fake gateway shares: scenario control, the record of received requests, and
serving a Starlette app on a loopback port.

Control from Python (tests): ``fake.scenario.set(Rule(...), token=...)``, ``fake.received``.
Control over HTTP (``openmps fakes serve`` users), on the fake's own port (:func:`control_routes`;
the APNs fake serves these paths over HTTP/2 itself, ``"rule"`` only):

- ``POST /__fake__/scenario`` ``{"token": "..." | null, "rule": {...Rule fields...}}``, or
  ``"error": <code>`` instead of ``"rule"`` for the vendor's answer to that code. On a fake
  with an auth endpoint, ``"target": "auth"`` (or the token ``"__auth__"``) puts the rule on it.
- ``GET /__fake__/scenario``: the send rules, by token
- ``DELETE /__fake__/scenario``: back to always succeeding
- ``GET /__fake__/received``: what was received, oldest first
- ``DELETE /__fake__/received``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

AUTH_TARGET = "auth"  # ``"target"`` of a control request for the auth endpoint
AUTH_TOKEN = "__auth__"  # the same, as a token
_TRANSPORT = "openmps.fake.transport"  # scope key: the connection's asyncio transport


@dataclass
class Rule:
    """How to answer instead of succeeding. Vendor fakes build these for their own errors.

    ``status``/``body``/``headers`` are the HTTP answer (a vendor that reports errors with
    HTTP 200 gets ``status=200`` and its error body). ``action`` names a transport fault the
    fake acts out instead of answering: ``"close"`` (drop the connection without an answer),
    ``"goaway"`` (HTTP/2 GOAWAY; APNs), ``"expire_auth"`` (every auth token issued so far
    becomes expired, then the request is judged normally). ``delay_s`` waits before answering.
    ``times`` is how many matching requests the rule applies to; None means every one.
    """

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None
    delay_s: float = 0.0
    times: int | None = None


class Scenario:
    """Rules by device token (``None`` = any token); a token's own rule wins."""

    def __init__(self) -> None:
        self._rules: dict[str | None, Rule] = {}

    def set(self, rule: Rule, token: str | None = None) -> None:
        self._rules[token] = rule

    def clear(self) -> None:
        self._rules.clear()

    def has(self, token: str | None) -> bool:
        """Whether ``token`` has a rule of its own (``None``: whether a shared rule is set)."""
        return token in self._rules

    def take(self, token: str | None) -> Rule | None:
        """The rule for this request, counting it against ``times``."""
        key = token if token in self._rules else None
        rule = self._rules.get(key)
        if rule is None:
            return None
        if rule.times is not None:
            rule.times -= 1
            if rule.times <= 0:
                del self._rules[key]
        return rule

    def take_many(self, tokens: Iterable[str]) -> dict[str | None, Rule]:
        """The rules for one request to many tokens: each token's own rule, taken once, and
        the shared rule (key ``None``), taken once if a token has none (or there is no token)
        and then standing for every token without its own."""
        tokens = list(dict.fromkeys(tokens))
        rules: dict[str | None, Rule] = {}
        shared_needed = not tokens
        for token in tokens:
            if self.has(token):
                rule = self.take(token)
                if rule is not None:
                    rules[token] = rule
            else:
                shared_needed = True
        if shared_needed:
            shared = self.take(None)
            if shared is not None:
                rules[None] = shared
                for token in tokens:
                    rules.setdefault(token, shared)
        return rules

    def as_json(self) -> dict[str, Any]:
        return {str(k): asdict(v) for k, v in self._rules.items()}


@dataclass(frozen=True)
class Received:
    """One request the fake got (auth headers kept: this is a test double's own log)."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)


class Recorder:
    """The last ``limit`` requests, and an event to wait for a count."""

    def __init__(self, limit: int = 100_000) -> None:
        self.items: deque[Received] = deque(maxlen=limit)
        self._changed = asyncio.Event()

    def add(self, item: Received) -> None:
        self.items.append(item)
        self._changed.set()

    def clear(self) -> None:
        self.items.clear()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.items) < count:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"got {len(self.items)} requests, wanted {count}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue
        return list(self.items)


# -- serving -----------------------------------------------------------------------------------


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: a fake runs inside someone else's process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _TransportTap:
    """Outer ASGI layer that lets a handler drop its connection (:func:`drop_connection`)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # uvicorn hands the app a bound method of its request cycle, which holds the socket.
            cycle = getattr(send, "__self__", None)
            scope[_TRANSPORT] = getattr(cycle, "transport", None)
        await self._app(scope, receive, send)


class UvicornRunner:
    """Serves one ASGI app with uvicorn inside the running event loop.

    ``name`` names the fake in errors and its task. ``graceful_shutdown_s`` is how long
    :meth:`stop` lets requests in progress finish.
    """

    def __init__(self, app: ASGIApp, name: str, *, graceful_shutdown_s: int = 1) -> None:
        self._app = _TransportTap(app)
        self._name = name
        self._graceful_shutdown_s = graceful_shutdown_s
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.host = "127.0.0.1"  # as given to start
        self.port: int | None = None  # the bound port while serving

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0: any free port); return the bound port."""
        config = uvicorn.Config(
            self._app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            proxy_headers=False,
            timeout_graceful_shutdown=self._graceful_shutdown_s,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(), name=f"fake-{self._name.lower()}")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it (e.g. the port is taken)
                raise RuntimeError(f"fake {self._name} could not listen on {host}:{port}")
            await asyncio.sleep(0.005)
        self.host = host
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop serving; open connections are closed."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(SystemExit):  # uvicorn's way to report a failed start
            await self._task
        self._server = self._task = None
        self.port = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, whatever host the fake listens on."""
        if self.port is None:
            raise RuntimeError("the fake is not started")
        return f"http://127.0.0.1:{self.port}"


class IssuedTokens:
    """Auth tokens a fake hands out, with their expiry, and the control to expire them all."""

    _tokens: dict[str, float]  # token -> expiry (monotonic seconds)

    def expire_tokens(self) -> None:
        """Every auth token issued so far stops working (the vendor's expiry answer)."""
        for token in self._tokens:
            self._tokens[token] = 0.0

    @property
    def issued_tokens(self) -> list[str]:
        """Every auth token handed out, oldest first (expired ones included)."""
        return list(self._tokens)


class ServedFake:
    """Start, stop and address of a fake whose vendor API a :class:`UvicornRunner` serves."""

    runner: UvicornRunner

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0: any free port); return the bound port."""
        return await self.runner.start(host, port)

    async def stop(self) -> None:
        """Stop serving; open connections are closed."""
        await self.runner.stop()

    @property
    def port(self) -> int | None:
        """The bound port while started."""
        return self.runner.port

    @property
    def url(self) -> str:
        """The base URL the vendor paths hang off, ``http://127.0.0.1:<port>``."""
        return self.runner.url

    @property
    def base_url(self) -> str:
        """The same as :attr:`url`."""
        return self.url


async def drop_connection(request: Request, *, abort: bool = False) -> Response:
    """Close the connection ``request`` came on without an answer (the ``close`` action);
    ``abort`` resets it instead. The returned 500 reaches the client only when the app is not
    served by a :class:`UvicornRunner`."""
    transport = request.scope.get(_TRANSPORT)
    if transport is not None:
        if abort:
            transport.abort()
        else:
            transport.close()
        await asyncio.sleep(0.01)  # let the server see the loss, so it sends nothing more
    return Response(status_code=500)


def rule_response(rule: Rule, *, text_type: str = "text/plain") -> Response:
    """A rule's answer: its body as JSON, as ``text_type`` when it is text, or empty."""
    status = rule.status or 200
    if rule.body is None:
        return Response(b"", status_code=status, headers=rule.headers)
    if isinstance(rule.body, str | bytes):
        return Response(rule.body, status_code=status, headers=rule.headers, media_type=text_type)
    return JSONResponse(rule.body, status_code=status, headers=rule.headers)


async def act_before_judging(
    rules: Iterable[Rule | None], expire_tokens: Callable[[], None]
) -> Response | None:
    """What OPPO's and vivo's fakes act out before judging a request: token expiry, delay,
    and a non-200 answer (a 200 rule is the vendor's verdict on its target, given later)."""
    found = [rule for rule in rules if rule is not None]
    if any(rule.action == "expire_auth" for rule in found):
        expire_tokens()
    delay = max((rule.delay_s for rule in found), default=0.0)
    if delay > 0:
        await asyncio.sleep(delay)
    for rule in found:
        if rule.status is not None and rule.status != 200:
            return rule_response(rule)
    return None


def target_answer(
    target: str, rule: Rule | None, triggers: Mapping[str, int], error: Callable[[int], Rule]
) -> Rule | None:
    """The rule for one target, or the answer its prefix triggers without a scenario:
    ``boom-`` is HTTP 500, a prefix of ``triggers`` the vendor's ``error`` for its code."""
    if rule is not None and rule.status is not None:
        return rule
    if target.startswith("boom-"):
        return Rule(status=500, body="Internal Server Error")
    for prefix, code in triggers.items():
        if target.startswith(prefix):
            return error(code)
    return None


# -- control endpoints -------------------------------------------------------------------------


def control_routes(
    scenario: Scenario,
    received: Recorder,
    *,
    error: Callable[[int], Rule] | None = None,
    auth_scenario: Scenario | None = None,
) -> list[Route]:
    """The ``/__fake__/`` routes of the module docstring, for a fake's Starlette app.

    ``error`` builds the vendor's answer for a code (``"error"`` in a request); without it
    only ``"rule"`` is accepted. ``auth_scenario`` holds the rules of the auth endpoint.
    """

    async def on_scenario(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(scenario.as_json())
        if request.method == "DELETE":
            scenario.clear()
            if auth_scenario is not None:
                auth_scenario.clear()
            return JSONResponse({"ok": True})
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _bad("expected a JSON object")
        token, target = payload.get("token"), payload.get("target")
        if not (token is None or isinstance(token, str)):
            return _bad("token must be a string or null")
        chosen = scenario
        if target == AUTH_TARGET or (token == AUTH_TOKEN and auth_scenario is not None):
            if auth_scenario is None:
                return _bad("this fake has no auth endpoint")
            chosen, token = auth_scenario, None  # the auth endpoint takes the shared rule
        elif target is not None:
            return _bad(f"unknown target {target!r}; the only one is {AUTH_TARGET!r}")
        code, given = payload.get("error"), payload.get("rule")
        if error is not None and isinstance(code, int) and not isinstance(code, bool):
            try:
                rule = error(code)
            except (ValueError, KeyError, TypeError) as exc:
                return _bad(f"bad error code: {exc}")
        elif isinstance(given, dict):
            unknown = set(given) - {f.name for f in fields(Rule)}
            if unknown:
                return _bad(f"unknown rule fields {sorted(unknown)}")
            rule = Rule(**given)
        else:
            return _bad("give a rule" + (" or an error code" if error is not None else ""))
        chosen.set(rule, token=token)
        return JSONResponse({"ok": True})

    async def on_received(request: Request) -> Response:
        if request.method == "DELETE":
            received.clear()
            return JSONResponse({"ok": True})
        return JSONResponse([asdict(item) for item in received.items])

    return [
        Route("/__fake__/scenario", on_scenario, methods=["GET", "POST", "DELETE"]),
        Route("/__fake__/received", on_received, methods=["GET", "DELETE"]),
    ]


def _bad(reason: str) -> Response:
    return JSONResponse({"error": reason}, status_code=400)
