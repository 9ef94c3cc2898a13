"""``cloudai gateway``: terminates workers' gRPC, validates heartbeats and publishes them
on the bus; optionally serves the telemetry WebSocket for every worker from the bus
(docs/SCALING.md)."""
