"""gRPC channel options shared by the master and the bench's do-nothing floor server."""

from __future__ import annotations

# The synchronous gRPC server's handler threads (``--grpc-server sync``, and the bench's
# floor of that kind). A unary heartbeat holds its thread for ~20-40 us of Python; more
# threads only add GIL hand-offs on two cores (docs/PERFORMANCE.md, "Unary ingest at the
# Go master's pace").
SYNC_SERVER_THREADS = 8
# Calls the synchronous server holds at once (running or waiting for a thread); beyond
# it grpcio refuses them (RESOURCE_EXHAUSTED) instead of queueing them in memory without
# bound: unbounded, 4,500 calls/s on 2 cores queued for seconds and 500 MB.
SYNC_SERVER_MAX_CALLS = 1000


def grpc_server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """The gRPC server's channel options (the bench's floor server uses the same).

    No BDP probing: gRPC would send a PING with each burst of received data to size its
    flow-control window for bulk transfers. Workers send small messages; at 10,000
    streaming workers those pings cost ~17 % of a core on each side (docs/PERFORMANCE.md)
    and the default 64 KiB window is ample for a heartbeat or a task result.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.bdp_probe", 0),
    ]
