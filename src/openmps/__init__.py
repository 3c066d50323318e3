"""openmps: a self-hosted Mobile Push Service."""

__version__ = "0.1.0"
