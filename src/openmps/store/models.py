"""Table models. Only Alembic migrations create or change the schema; these classes mirror it.

A status is stored as the pair (channel, code): the seed's codes collide across channels.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only gives INTEGER PRIMARY KEY its rowid behaviour for the exact type INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and always read back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class App(Base):
    __tablename__ = "apps"
    __table_args__ = (UniqueConstraint("app_id", "workspace_id", name="uq_apps_app_workspace"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    app_id: Mapped[str] = mapped_column(String(64))
    workspace_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # "own_first": the own channel while the device is online there, else its vendor token;
    # "vendor_first": the vendor token whenever the device has one.
    route_policy: Mapped[str] = mapped_column(String(16), server_default="own_first")
    # Which pushes wait for approval (status -1): "none", "broadcast", "batch" (multiple and
    # broadcast) or "all" (docs/review.md).
    review_rule: Mapped[str] = mapped_column(String(16), server_default="none")


class ChannelSettings(Base):
    """One vendor channel's settings for one app; secrets are inside ``settings``."""

    __tablename__ = "channel_configs"
    __table_args__ = (UniqueConstraint("app_pk", "vendor", name="uq_channel_configs_app_vendor"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    vendor: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    base_url: Mapped[str | None] = mapped_column(String(512))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"ChannelSettings(app_pk={self.app_pk}, vendor={self.vendor!r}, settings=<hidden>)"


class AccessKey(Base):
    __tablename__ = "access_keys"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    # Kept in clear: ACS3-HMAC-SHA256 needs the secret itself to recompute signatures.
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"AccessKey(key_id={self.key_id!r}, secret=<hidden>)"


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_app_platform", "app_pk", "platform"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    delivery_token: Mapped[str] = mapped_column(String(64), unique=True)
    # SHA-256 of the device secret; the secret itself is only ever known to the device.
    secret_hash: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(16))
    os_type: Mapped[int | None] = mapped_column(Integer)
    third_channel: Mapped[int | None] = mapped_column(Integer)
    third_token: Mapped[str | None] = mapped_column(String(512))
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When its last user binding was removed (broadcast audiences by unbind period).
    unbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"Device(id={self.id}, platform={self.platform!r})"


class Binding(Base):
    __tablename__ = "bindings"
    __table_args__ = (
        UniqueConstraint("device_pk", "user_id", name="uq_bindings_device_user"),
        Index("ix_bindings_app_user", "app_pk", "user_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(128))
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    phone_number: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Task(Base):
    """One accepted push request; its id is what PushResult.Data returns."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_app_created", "app_pk", "created_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # Our own unique id for the request that made the task (matches rows of a batch insert).
    request_id: Mapped[str] = mapped_column(String(32), unique=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    # "simple", "template", "multiple" or "broadcast"
    kind: Mapped[str] = mapped_column(String(16))
    task_name: Mapped[str | None] = mapped_column(String(256))
    delivery_type: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    template_name: Mapped[str | None] = mapped_column(String(128))
    # None: no review needed; "pending", "approved" or "rejected" (docs/review.md).
    review: Mapped[str | None] = mapped_column(String(16))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The schedule job (Schedule.unique_id) that fired this task, if any.
    schedule_id: Mapped[str | None] = mapped_column(String(40))
    # A broadcast's audience filters, as accepted.
    audience: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Message(Base):
    """One message: a (target, msgKey) pair of a task, with what the device shows."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("app_pk", "msg_key", "target", name="uq_messages_app_key_target"),
        Index("ix_messages_app_created", "app_pk", "created_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    task_pk: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    msg_key: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(128))
    delivery_type: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """One message to one device, or to a target not resolved yet (device_pk NULL)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_device_pending", "device_pk", "final", "expires_at"),
        Index("ix_deliveries_message_device", "message_pk", "device_pk"),
        Index("ix_deliveries_pending_expiry", "final", "expires_at"),
        Index("ix_deliveries_pending_route", "final", "route", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # messages.id and devices.id, without foreign keys: their per-row checks were most of a
    # broadcast's expansion on PostgreSQL (migration 0005, docs/decisions.md).
    message_pk: Mapped[int] = mapped_column(Id)
    device_pk: Mapped[int | None] = mapped_column(Id)
    # How it goes out: "own" (the device gateway) or a vendor channel (issue 3).
    route: Mapped[str] = mapped_column(String(16))
    # The status is the pair (status_channel, code): "common" for the seed's common codes.
    status_channel: Mapped[str] = mapped_column(String(16))
    code: Mapped[int] = mapped_column(Integer)
    final: Mapped[bool] = mapped_column(Boolean)
    # Why the status is what it is when the code alone cannot say it: "expired", "revoked",
    # "unknown_device", or the vendor's raw answer (issue 3).
    detail: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")  # vendor sends so far
    # Receipts for analytics: written to the device (own channel) and dismissed by the user.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ignored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Scale-out only (docs/scale-out.md): the worker node sending this vendor delivery now,
    # and when it claimed it or last checked the claim before a send. NULL in one process.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Template(Base):
    """A message template of an app; ``#name#`` placeholders are filled at push time."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("app_pk", "name", name="uq_templates_app_name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    desc_info: Mapped[str | None] = mapped_column(Text)
    uri: Mapped[str | None] = mapped_column(String(1024))
    icon_urls: Mapped[str | None] = mapped_column(Text)
    image_urls: Mapped[str | None] = mapped_column(Text)
    push_style: Mapped[int | None] = mapped_column(Integer)
    show_style: Mapped[int | None] = mapped_column(Integer)
    jump_action: Mapped[int | None] = mapped_column(Integer)
    variables: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Schedule(Base):
    """One scheduled push job: the job of a StrategyType 1 push, or one occurrence (sub-job)
    of a cyclic push, whose ``parent_id`` is the main job's ``unique_id``."""

    __tablename__ = "schedules"
    __table_args__ = (
        Index("ix_schedules_state_fire", "state", "fire_at"),
        Index("ix_schedules_app_fire", "app_pk", "fire_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    unique_id: Mapped[str] = mapped_column(String(40), unique=True)
    parent_id: Mapped[str] = mapped_column(String(40), index=True)
    app_pk: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    delivery_type: Mapped[int] = mapped_column(Integer)
    strategy_type: Mapped[int] = mapped_column(Integer)
    fire_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # "pending", "executed", "cancelled" or "missed"
    state: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the push to make when it fires
    title: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str | None] = mapped_column(Text)
    time_zone: Mapped[str | None] = mapped_column(String(64))
    task_pk: Mapped[int | None] = mapped_column(Id)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
