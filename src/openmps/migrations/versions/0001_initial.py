"""Initial schema: apps, access keys, devices, bindings, tasks, messages, deliveries.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from openmps.store.models import Id, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", Id, primary_key=True),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("app_id", "workspace_id", name="uq_apps_app_workspace"),
    )
    op.create_table(
        "access_keys",
        sa.Column("id", Id, primary_key=True),
        sa.Column("app_pk", Id, sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False, unique=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_access_keys_app_pk", "access_keys", ["app_pk"])
    op.create_table(
        "devices",
        sa.Column("id", Id, primary_key=True),
        sa.Column("app_pk", Id, sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("delivery_token", sa.String(64), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("os_type", sa.Integer()),
        sa.Column("third_channel", sa.Integer()),
        sa.Column("third_token", sa.String(512)),
        sa.Column("report", sa.JSON()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime()),
    )
    op.create_index("ix_devices_app_pk", "devices", ["app_pk"])
    op.create_table(
        "bindings",
        sa.Column("id", Id, primary_key=True),
        sa.Column("app_pk", Id, sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("device_pk", Id, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("phone_number", sa.String(32)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("device_pk", "user_id", name="uq_bindings_device_user"),
    )
    op.create_index("ix_bindings_app_user", "bindings", ["app_pk", "user_id"])
    op.create_table(
        "tasks",
        sa.Column("id", Id, primary_key=True),
        sa.Column("request_id", sa.String(32), nullable=False, unique=True),
        sa.Column("app_pk", Id, sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("task_name", sa.String(256)),
        sa.Column("delivery_type", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_tasks_app_pk", "tasks", ["app_pk"])
    op.create_table(
        "messages",
        sa.Column("id", Id, primary_key=True),
        sa.Column("task_pk", Id, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("app_pk", Id, sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("msg_key", sa.String(128), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("delivery_type", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
        sa.UniqueConstraint("app_pk", "msg_key", "target", name="uq_messages_app_key_target"),
    )
    op.create_index("ix_messages_task_pk", "messages", ["task_pk"])
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "message_pk", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("device_pk", Id, sa.ForeignKey("devices.id", ondelete="SET NULL")),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("status_channel", sa.String(16), nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("acked_at", UTCDateTime()),
        sa.Column("opened_at", UTCDateTime()),
    )
    op.create_index("ix_deliveries_message_pk", "deliveries", ["message_pk"])
    op.create_index("ix_deliveries_device_pending", "deliveries", ["device_pk", "final"])
    op.create_index("ix_deliveries_pending_expiry", "deliveries", ["final", "expires_at"])


def downgrade() -> None:
    for table in ("deliveries", "messages", "tasks", "bindings", "devices", "access_keys"):
        op.drop_table(table)
    op.drop_table("apps")
