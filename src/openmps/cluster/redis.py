"""The Redis connection shared by the scale-out building blocks, and the names they use.

One client per process, opened by :func:`connect`, which sends PING (and reads the server
version) before anything else runs: a Redis that cannot be reached, or refuses our credentials,
stops the start with a :class:`~openmps.errors.ConfigError` naming the URL (password hidden)
and how to fix it.

Every key and pub/sub channel starts with the deployment's prefix (``openmps`` unless set), so
several deployments, or several test runs, can share one Redis server. Pub/sub channels ignore
the database number of the URL, which is another reason the prefix matters.

A single Redis server (optionally with replicas and Sentinel) is assumed: several blocks run
Lua scripts and MGETs over keys that Redis Cluster would spread over different slots.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from openmps.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""Where :func:`connect` looks when no URL is configured."""

DEFAULT_PREFIX = "openmps"
"""The key prefix of a deployment that does not set one."""

MIN_SERVER_VERSION = (7, 0)
"""XAUTOCLAIM's report of deleted entries and ``SET NX GET`` need Redis 7.0."""
MAX_CONNECTIONS = 64  # per process: commands, a pub/sub listener, blocking stream reads
POOL_WAIT_S = 30.0  # how long a command waits for a free connection before it fails

SOCKET_TIMEOUT_S = 30.0
"""Default read timeout of a connection; blocking reads (XREADGROUP BLOCK) must stay below."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start our key names; raise :class:`ConfigError` if not."""
    if not _NAME_RE.fullmatch(prefix):
        raise ConfigError(
            f"redis_prefix {prefix!r} is not usable: use 1 to 64 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit (for example 'openmps' or 'openmps-eu1')"
        )
    return prefix


def check_node_id(node: str, *, what: str = "node_id") -> str:
    """Return ``node`` if it can name a node or consumer; raise :class:`ConfigError` if not."""
    if not _NAME_RE.fullmatch(node):
        raise ConfigError(
            f"{what} {node!r} is not usable: use 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (for example 'gw-1' or the host name)"
        )
    return node


def default_node_id() -> str:
    """A node id unique to this process: host name, process id and a random suffix.

    The random part keeps a restarted process from inheriting the presence entries and stream
    consumer of its predecessor when the operating system reuses the process id.
    """
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:40] or "host"
    if not host[0].isalnum():
        host = "h" + host[:39]
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"


def decoded(client: Redis) -> Redis:
    """Return ``client`` if it decodes replies to ``str`` (as :func:`connect` makes it).

    The building blocks compare and parse replies as text; a bytes client would make them
    misread every reply, so it is refused with ``ValueError``.
    """
    if not client.connection_pool.connection_kwargs.get("decode_responses", False):
        raise ValueError("the Redis client must decode responses: open it with connect()")
    return client


def key(prefix: str, *parts: str | int) -> str:
    """``prefix:part:part...``: the name of a key or channel of this deployment."""
    return ":".join((prefix, *(str(part) for part in parts)))


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


async def connect(
    url: str = DEFAULT_REDIS_URL,
    *,
    client_name: str | None = None,
    connect_timeout_s: float = 5.0,
    socket_timeout_s: float = SOCKET_TIMEOUT_S,
    retries: int = 3,
) -> Redis:
    """Open a client for ``url`` and check the server answers; raise :class:`ConfigError` if not.

    ``url`` is ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS) or
    ``unix:///path/to/socket?db=0``. ``client_name`` shows in ``CLIENT LIST`` (use the node
    id). ``connect_timeout_s`` bounds each connection attempt, ``socket_timeout_s`` each reply
    (blocking stream reads are kept shorter than it). A command that meets a broken connection
    is tried again up to ``retries`` times with an exponential backoff from 50 ms to 1 s; after
    that the redis-py error reaches the caller. Responses are decoded as UTF-8 ``str``.

    The caller owns the client: close it with ``await client.aclose()``.
    """
    shown = shown_url(url)
    if client_name is not None:
        check_node_id(client_name, what="client_name")
    try:
        # A bounded pool: thousands of devices leaving at once wait for one of MAX_CONNECTIONS
        # connections instead of opening thousands of sockets (regression: "Too many
        # connections" on presence detach when a bench closed 4,000 devices).
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            decode_responses=True,
            client_name=client_name,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            socket_keepalive=True,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        )
        client = Redis(connection_pool=pool, auto_close_connection_pool=True)
    except ValueError as exc:
        raise ConfigError(
            f"redis_url {shown} is not a Redis URL ({exc}); write it as "
            f"redis://host:port/db (for example {DEFAULT_REDIS_URL}), rediss://... for TLS, "
            "or unix:///path/to/redis.sock?db=0"
        ) from None

    try:
        await client.ping()
        info = await client.info("server")
    except (RedisError, OSError) as exc:
        await client.aclose()
        reason = str(exc).rstrip(".")
        raise ConfigError(
            f"cannot reach Redis at {shown}: {reason}. Start Redis there (for example "
            "`redis-server --port 6379`), or set redis_url (OPENMPS_REDIS_URL) to a server "
            "this node can reach, with the password in the URL if it needs one"
        ) from None

    version = str(info.get("redis_version", "0"))
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if numbers < MIN_SERVER_VERSION:
        await client.aclose()
        wanted = ".".join(str(n) for n in MIN_SERVER_VERSION)
        raise ConfigError(
            f"Redis at {shown} is version {version}; openmps needs {wanted} or newer "
            "(XAUTOCLAIM and SET NX GET). Upgrade Redis, or point redis_url at a newer server"
        )
    logger.info("redis connected: %s (server %s)", shown, version)
    return client
