"""Logging of ``openmps serve``: one handler on stderr, text or JSON lines, secrets masked.

Every record passes :class:`Redactor` first, whichever library logged it: a word that looks
machine-made (a delivery token, a device or access key secret, a vendor token, a bearer value)
keeps only its last four characters. Our own code masks tokens before it logs them; this is the
net under it, for the exception texts and library lines we do not write ourselves.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from openmps.devices import mask

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
# A value named as secret: ``secret=…``, ``"device_token": "…"``, ``Authorization: Basic …``.
_NAMED = re.compile(
    r"(?i)([a-z_]*(?:secret|token|password|authorization|signature)[a-z_]*[\"']?\s*[=:]\s*"
    r"[\"']?(?:basic\s+|bearer\s+)?)([^\s\"',;&}\]]+)"
)
# A value that looks random: runs of the characters of base64url, hex and alphanumeric keys.
_WORD = re.compile(r"[A-Za-z0-9_-]{20,}")
_RUNS = re.compile(r"[a-z]+|[A-Z]+|[0-9]+")
_ACCESS_KEY_ID = re.compile(r"LTAI[A-Za-z0-9]{20}")  # an AccessKeyId names a key; not secret
# Ids operators search for, kept whole where our code logs them by name: a schedule job id
# (32 lower-case hex) as ``job=<id>`` or ``ids=<id>,<id>``, an MPS RequestId (an upper-case
# UUID, which a 500 answer tells the caller to look for) as ``request=<id>``.
_JOB_ID = re.compile(
    r"(job[=\s]|ids=|request=)"
    r"([0-9a-f]{32}(?:,[0-9a-f]{32})*|[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})\b"
)


def looks_secret(word: str) -> bool:
    """True for a word of 20 characters or more that looks machine-made, not named by a person.

    Random keys mix digits with both cases, or have digits in many places, or many short
    lower-case runs; names (``ConnectionRefusedError``, ``DeviceTokenNotForTopic``,
    ``push_intake_loop``, ``OPENMPS_DATA_DIR``) have long lower-case runs and few digits.
    Digits alone (ids, counts) are never masked.
    """
    if _ACCESS_KEY_ID.fullmatch(word):
        return False
    classes: set[str] = set()
    digit_runs = acronyms = 0
    lower_runs: list[int] = []
    for part in re.split(r"[-_]", word):
        runs = _RUNS.findall(part)
        for run in runs:
            if run[0].isdigit():
                classes.add("digit")
                digit_runs += 1
            elif run[0].islower():
                classes.add("lower")
                if len(runs) > 1 and len(part) >= 8:
                    lower_runs.append(len(run))
            else:
                classes.add("upper")
                if len(runs) > 1 and len(run) >= 2:
                    acronyms += 1
    if len(classes) == 3 or digit_runs > 2 or acronyms > 2:
        return True
    return bool(lower_runs) and sum(lower_runs) < 3 * len(lower_runs)


def redact(text: str) -> str:
    """``text`` with every value named as secret, and every word that looks random, masked to
    its last four characters."""
    text = _NAMED.sub(lambda m: m.group(1) + mask(m.group(2)), text)
    kept = _JOB_ID.split(text)  # [text, key, ids, text, key, ids, ..., text]
    for i in range(0, len(kept), 3):
        kept[i] = _WORD.sub(
            lambda m: mask(m.group()) if looks_secret(m.group()) else m.group(), kept[i]
        )
    return "".join(kept)


class Redactor(logging.Filter):
    """Masks secrets in a record's message, its ``extra`` strings and its exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, msg, then the record's
    ``extra`` fields, then ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as text or JSON lines, secrets masked."""
    handler = logging.StreamHandler(stream or sys.stderr)
    json_lines = log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(Redactor())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if logging.getLogger().level > logging.DEBUG:
        # httpx logs every vendor request at INFO: a line per push, with the vendor's URL.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        # websockets logs each connection opening and closing; the gateway logs its own lines
        # for those, with the device id.
        logging.getLogger("websockets.server").addFilter(_quiet_connections)


def _quiet_connections(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(("connection open", "connection closed"))
