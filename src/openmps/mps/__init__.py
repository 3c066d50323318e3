"""The mPaaS MPS OpenAPI front door: request signature checks and form decoding."""
