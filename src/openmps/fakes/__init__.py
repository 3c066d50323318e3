"""Faithful stand-ins for the vendor push gateways, served over real sockets.

Each fake follows its vendor's reference (``shared/reference/``): same paths, auth flows
(tokens that expire), request validation, success and error bodies, limits. Each has a
:class:`~openmps.fakes.base.Scenario` to make it answer as the vendor would in trouble, and a
record of what it received. ``openmps fakes serve`` runs them all for offline testing.
"""
