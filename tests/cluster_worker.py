"""A dispatch worker process for tests/test_cluster_redis.py, meant to be killed mid-work.

``python -m tests.cluster_worker URL PREFIX CONSUMER COUNT ACK`` takes ``COUNT`` entries from
the dispatch stream, acks the first ``ACK`` of them, prints one JSON line
``{"got": [ids], "acked": [ids]}`` and then sleeps, holding the rest pending, until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from openmps.cluster.bus import DispatchStream
from openmps.cluster.redis import connect


async def main(url: str, prefix: str, consumer: str, count: int, ack: int) -> None:
    client = await connect(url, client_name=consumer)
    stream = DispatchStream(client, prefix=prefix)
    got = await stream.consume(consumer, count=count, block_ms=5000)
    acked = [entry.id for entry in got[:ack]]
    await stream.ack(acked)
    print(json.dumps({"got": [entry.id for entry in got], "acked": acked}), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    url, prefix, consumer, count, ack = sys.argv[1:6]
    asyncio.run(main(url, prefix, consumer, int(count), int(ack)))
