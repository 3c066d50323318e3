"""Which vendor channels exist, their classes, and our numbering of them.

``ThirdChannel`` (PushReport) numbers are ours: the public MPS docs publish none
(docs/vendor-channels.md). 6 is FCM, as the one app seen in the wild sends 6 with GOOGLE_PLAY.
"""

from __future__ import annotations

import importlib

from openmps.channels.base import VendorChannel
from openmps.errors import ConfigError

# route key -> "module:Class"; modules are imported on first use
VENDORS: dict[str, str] = {
    "apns": "openmps.channels.apns:APNsChannel",
    "fcm": "openmps.channels.fcm:FCMChannel",
    "hms": "openmps.channels.huawei:HuaweiChannel",
    "xiaomi": "openmps.channels.xiaomi:XiaomiChannel",
    "oppo": "openmps.channels.oppo:OPPOChannel",
    "vivo": "openmps.channels.vivo:VivoChannel",
}

# Settings that are not secret, per vendor: shown in listings. Any other key a channel
# accepts is a secret (its class's ``secret_keys``); anything else is refused when set.
PUBLIC_SETTINGS: dict[str, frozenset[str]] = {
    "apns": frozenset({"team_id", "key_id", "topic", "environment", "push_type", "ca_pem"}),
    "fcm": frozenset({"project_id", "base_url"}),
    "hms": frozenset({"app_id", "token_url", "base_url"}),
    "xiaomi": frozenset({"package_name", "base_url"}),
    "oppo": frozenset({"app_key", "channel_id", "category", "notify_level", "base_url"}),
    "vivo": frozenset({"app_id", "app_key", "classification", "notify_type", "base_url"}),
}

# PushReport ThirdChannel -> route key
THIRD_CHANNELS: dict[int, str] = {1: "apns", 2: "xiaomi", 3: "hms", 4: "oppo", 5: "vivo", 6: "fcm"}


def channel_class(vendor: str) -> type[VendorChannel]:
    target = VENDORS.get(vendor)
    if target is None:
        raise ConfigError(f"unknown vendor {vendor!r}; one of: {', '.join(VENDORS)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the {vendor} channel is not available in this build") from exc
    cls: type[VendorChannel] = getattr(module, class_name)
    return cls


def vendor_of(third_channel: int | None, platform: str) -> str | None:
    """The route key for a device's reported vendor token; iOS tokens are APNs tokens."""
    if platform == "ios":
        return "apns"
    if third_channel is None:
        return None
    return THIRD_CHANNELS.get(third_channel)
