"""Scale-out building blocks over Redis: the connection, shared replay protection, presence,
the dispatch work stream and gateway routing. See ``docs/scale-out.md``."""

from __future__ import annotations

from openmps.cluster.bus import DispatchStream, StreamDepth, StreamEntry
from openmps.cluster.nonces import LocalNonces, NonceStore, RedisNonceCache
from openmps.cluster.presence import Presence, Refreshed
from openmps.cluster.redis import DEFAULT_PREFIX, DEFAULT_REDIS_URL, connect, default_node_id
from openmps.cluster.routing import FrameRouter, RoutedBatch, RoutedFrame, Subscription

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_REDIS_URL",
    "DispatchStream",
    "FrameRouter",
    "LocalNonces",
    "NonceStore",
    "Presence",
    "RedisNonceCache",
    "Refreshed",
    "RoutedBatch",
    "RoutedFrame",
    "StreamDepth",
    "StreamEntry",
    "Subscription",
    "connect",
    "default_node_id",
]
