"""Vendor channels: one module per vendor gateway, each behind :class:`VendorChannel`."""
