"""Exceptions raised by openmps.

The tree::

    OpenMPSError                 root: catch this to catch anything of ours
    ├── ApiError                 refused at the front door (auth, signature, transport):
    │                            answered with an HTTP 4xx/5xx and a JSON Code/Message
    ├── BusinessError            the request was well-formed but its content is refused:
    │                            answered with HTTP 200 and an MPS ResultCode (3001 ... 3050)
    ├── ConfigError              settings that cannot work; raised at start, never at run time
    └── StoreError               the store cannot be opened or migrated
"""

from __future__ import annotations


class OpenMPSError(Exception):
    """Root of every exception openmps raises on purpose."""


class ApiError(OpenMPSError):
    """A request refused before any business logic ran."""

    def __init__(self, http_status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.http_status = http_status
        self.code = code
        self.message = message


class BusinessError(OpenMPSError):
    """A request whose content MPS refuses with a ResultCode (reference 1.5)."""

    def __init__(self, result_code: int, name: str, detail: str) -> None:
        super().__init__(f"{result_code} {name}: {detail}")
        self.result_code = result_code
        self.name = name
        self.detail = detail


class ConfigError(OpenMPSError):
    """A setting that cannot work; the message says which and how to fix it."""


class StoreError(OpenMPSError):
    """The store could not be opened, migrated or read."""
