"""The own channel: the device gateway (WebSocket) and the hub that finds a device's link."""
