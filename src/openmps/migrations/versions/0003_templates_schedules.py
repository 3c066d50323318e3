"""Templates, schedules, review and analytics columns (issue 4).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from openmps.store.models import Id, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", Id, primary_key=True),
        sa.Column("app_pk", Id, sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("desc_info", sa.Text()),
        sa.Column("uri", sa.String(1024)),
        sa.Column("icon_urls", sa.Text()),
        sa.Column("image_urls", sa.Text()),
        sa.Column("push_style", sa.Integer()),
        sa.Column("show_style", sa.Integer()),
        sa.Column("jump_action", sa.Integer()),
        sa.Column("variables", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("app_pk", "name", name="uq_templates_app_name"),
    )
    op.create_table(
        "schedules",
        sa.Column("id", Id, primary_key=True),
        sa.Column("unique_id", sa.String(40), nullable=False, unique=True),
        sa.Column("parent_id", sa.String(40), nullable=False, index=True),
        sa.Column("app_pk", Id, sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("delivery_type", sa.Integer(), nullable=False),
        sa.Column("strategy_type", sa.Integer(), nullable=False),
        sa.Column("fire_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("title", sa.Text()),
        sa.Column("content", sa.Text()),
        sa.Column("time_zone", sa.String(64)),
        sa.Column("task_pk", Id),
        sa.Column("detail", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("executed_at", UTCDateTime()),
        sa.Index("ix_schedules_state_fire", "state", "fire_at"),
        sa.Index("ix_schedules_app_fire", "app_pk", "fire_at"),
    )
    with op.batch_alter_table("apps") as batch:
        batch.add_column(
            sa.Column("review_rule", sa.String(16), nullable=False, server_default="none")
        )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("template_name", sa.String(128)))
        batch.add_column(sa.Column("review", sa.String(16)))
        batch.add_column(sa.Column("reviewed_at", UTCDateTime()))
        batch.add_column(sa.Column("schedule_id", sa.String(40)))
        batch.add_column(sa.Column("audience", sa.JSON()))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("unbound_at", UTCDateTime()))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("sent_at", UTCDateTime()))
        batch.add_column(sa.Column("ignored_at", UTCDateTime()))
    op.create_index("ix_tasks_app_created", "tasks", ["app_pk", "created_at"])
    op.create_index("ix_messages_app_created", "messages", ["app_pk", "created_at"])
    op.create_index("ix_devices_app_platform", "devices", ["app_pk", "platform"])
    # What a device has pending is read on every connect: with expires_at in this index, the
    # planner takes it rather than scanning every pending delivery (a broadcast's million).
    op.drop_index("ix_deliveries_device_pending", "deliveries")
    op.create_index(
        "ix_deliveries_device_pending", "deliveries", ["device_pk", "final", "expires_at"]
    )
    # A task's deliveries to the devices connected now (broadcast, approval): one seek each.
    op.drop_index("ix_deliveries_message_pk", "deliveries")
    op.create_index("ix_deliveries_message_device", "deliveries", ["message_pk", "device_pk"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_message_device", "deliveries")
    op.create_index("ix_deliveries_message_pk", "deliveries", ["message_pk"])
    op.drop_index("ix_deliveries_device_pending", "deliveries")
    op.create_index("ix_deliveries_device_pending", "deliveries", ["device_pk", "final"])
    op.drop_index("ix_devices_app_platform", "devices")
    op.drop_index("ix_messages_app_created", "messages")
    op.drop_index("ix_tasks_app_created", "tasks")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("ignored_at")
        batch.drop_column("sent_at")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("unbound_at")
    with op.batch_alter_table("tasks") as batch:
        for column in ("audience", "schedule_id", "reviewed_at", "review", "template_name"):
            batch.drop_column(column)
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("review_rule")
    op.drop_table("schedules")
    op.drop_table("templates")
