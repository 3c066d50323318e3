"""The store: SQL tables, the engine, and migrations. The source of truth for every status."""

from openmps.store.db import Store
from openmps.store.models import (
    AccessKey,
    App,
    Base,
    Binding,
    ChannelSettings,
    Delivery,
    Device,
    Message,
    Schedule,
    Task,
    Template,
)

__all__ = [
    "AccessKey",
    "App",
    "Base",
    "Binding",
    "ChannelSettings",
    "Delivery",
    "Device",
    "Message",
    "Schedule",
    "Store",
    "Task",
    "Template",
]
