"""The master node: registry, gRPC service, telemetry fan-out, HTTP/WebSocket server."""
