"""CloudAI: a cluster master/worker system with real-time telemetry."""

__version__ = "0.1.0"
