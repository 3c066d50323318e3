"""The scale-out mode: the roles of ``openmps serve --role ...`` wired over PostgreSQL and Redis.

:mod:`openmps.cluster` holds the Redis building blocks; this package joins them to the store
and the service layer: the node's Redis link and liveness (:mod:`.node`), dispatch across
processes (:mod:`.dispatch`), the gateway's presence and routed frames (:mod:`.gateway`), the
stream worker that sends vendor deliveries (:mod:`.worker`) with its claims in the store
(:mod:`.claims`), and the recovery sweep of the scheduler role (:mod:`.recovery`).
See ``docs/scale-out.md``.
"""
