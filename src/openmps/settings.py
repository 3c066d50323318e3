"""Settings: one typed class, read from the environment (prefix ``OPENMPS_``), an optional
TOML file (``OPENMPS_CONFIG``), then the defaults written here. CLI options override all."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ROLES = ("api", "gateway", "worker", "scheduler")
"""What a process can run; ``openmps serve`` runs all four unless told otherwise."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # as openmps.cluster.redis checks


class _ConfigFileMissing(ValueError):
    pass


class Settings(BaseSettings):
    """Every knob of a running openmps, with its default and unit."""

    model_config = SettingsConfigDict(env_prefix="OPENMPS_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="MPS OpenAPI and REST port")
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8081, ge=0, le=65535, description="device gateway port")
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; None means SQLite at <data_dir>/openmps.db"
    )

    # MPS front door
    signature_window_s: float = Field(900.0, gt=0, description="allowed x-acs-date skew")
    max_expired_seconds: int = Field(
        72 * 3600, gt=0, description="largest ExpiredSeconds a push may ask for (3026 beyond)"
    )

    # Device gateway
    heartbeat_interval_s: float = Field(20.0, gt=0, description="server ping period")
    heartbeat_timeout_s: float = Field(20.0, gt=0, description="pong wait before close")
    device_max_frame_bytes: int = Field(4096, gt=0, description="largest frame a device sends")
    device_rate_per_s: float = Field(50.0, gt=0, description="frames/s a device may send")
    device_rate_burst: int = Field(200, gt=0, description="frames a device may send at once")

    # Vendor channels
    vendor_concurrency: int = Field(
        16, description="vendor batches being sent at once; 0 or less is refused at start"
    )
    vendor_max_attempts: int = Field(5, description="sends per delivery before giving up")
    vendor_backoff_base_s: float = Field(1.0, gt=0, description="first retry's longest wait")
    vendor_backoff_max_s: float = Field(300.0, gt=0, description="longest wait between retries")

    # Logs (on stderr)
    log_format: Literal["text", "json"] = Field(
        "text", description="text lines, or one JSON object per line"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="the least severe level written"
    )

    # Status writer
    status_flush_interval_s: float = Field(0.05, gt=0, description="longest wait before flush")
    status_flush_max: int = Field(2000, gt=0, description="status changes per transaction")

    # Scheduler
    schedule_time_zone: str = Field(
        "Asia/Shanghai",
        description="IANA zone of a cyclic push's `time` when its StrategyContent has no timeZone",
    )

    # Scale-out (docs/scale-out.md)
    role: str = Field(
        ",".join(ROLES),
        description="what this process runs: api, gateway, worker, scheduler, comma-separated",
    )
    redis_url: str | None = Field(
        None, description="Redis of a scaled-out deployment; unset: one process, no Redis"
    )
    redis_prefix: str = Field("openmps", description="start of every Redis key and channel")
    node_id: str | None = Field(
        None, description="this process in Redis; unset: <host>-<pid>-<random>"
    )
    presence_ttl_s: float = Field(
        30.0, gt=0, description="a dead node's devices and claims are given up after this"
    )
    dispatch_stream_maxlen: int = Field(1_000_000, ge=1, description="dispatch stream bound")
    dispatch_reclaim_idle_s: float = Field(
        60.0, gt=0, description="a worker takes over stream entries pending this long"
    )
    recovery_after_s: float = Field(
        30.0, gt=0, description="pending deliveries this long without progress are sent again"
    )
    drain_timeout_s: float = Field(
        10.0, ge=0, description="on stop, longest wait for work in progress before handing back"
    )
    ops_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="/healthz, /readyz and /metrics of a process without the api role",
    )

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("role", mode="before")
    @classmethod
    def _known_roles(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            value = ",".join(str(part) for part in value)
        if not isinstance(value, str):
            return value
        given = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = sorted(set(given) - set(ROLES))
        if unknown or not given:
            raise ValueError(
                f"roles are {', '.join(ROLES)}, comma-separated (for example api,gateway); "
                f"unknown: {', '.join(unknown) or 'none given'}"
            )
        return ",".join(role for role in ROLES if role in given)

    @field_validator("redis_prefix")
    @classmethod
    def _usable_prefix(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError("use 1 to 64 letters, digits, '_', '.' or '-', starting with one")
        return value

    @field_validator("node_id")
    @classmethod
    def _usable_node(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.fullmatch(value):
            raise ValueError("use 1 to 64 letters, digits, '_', '.' or '-', starting with one")
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("schedule_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                "not an IANA time zone name (such as Asia/Shanghai, Europe/Berlin or UTC)"
            ) from None
        return value

    @property
    def roles(self) -> frozenset[str]:
        """The roles this process runs."""
        return frozenset(self.role.split(","))

    @property
    def scaled(self) -> bool:
        """Scaled out: shares work with other processes through Redis (redis_url set, or a
        process that does not run every role)."""
        return self.redis_url is not None or self.roles != frozenset(ROLES)

    @property
    def sqlalchemy_url(self) -> str:
        """The store URL, defaulting to the SQLite file under data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'openmps.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("OPENMPS_CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise _ConfigFileMissing(
                    f"OPENMPS_CONFIG names {config_file!r}, which is not a file; point it at a "
                    "TOML file or unset it"
                )
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI overrides applied; an override of None means "not given".

    Raises ValueError with one line per bad setting, naming its option, environment
    variable and the config file when there is one.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        source = os.environ.get("OPENMPS_CONFIG")
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            where = f"--{name.replace('_', '-')} / OPENMPS_{name.upper()}"
            if source:
                where += f" / {name} in {source}"
            lines.append(f"{name} ({where}): {error['msg']}, got {error.get('input')!r}")
        raise ValueError("; ".join(lines)) from None
    except _ConfigFileMissing as exc:
        raise ValueError(str(exc)) from None
    except (OSError, ValueError) as exc:
        source = os.environ.get("OPENMPS_CONFIG")
        raise ValueError(f"{source}: {exc}" if source else str(exc)) from None
