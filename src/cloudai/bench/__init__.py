"""`cloudai bench`: an open-loop load generator and latency meter for CloudAI masters.

Modules, one job each:

- ``histogram``: latency histogram with ~1 % relative precision, mergeable across processes;
- ``schedule``: open-loop send times, worker partitioning, heartbeat tags;
- ``h2frames`` / ``h2client``: a minimal HTTP/2 gRPC client (unary and client-streaming),
  ~10x cheaper per call than grpc.aio and 2x cheaper than the ``h2`` library, so the
  generator is not the bottleneck (tested against a grpc.aio server);
- ``heartbeats``: pre-encoded heartbeat messages whose cpu_usage carries the tag;
- ``wsclient``: the dashboard clients' WebSocket connection, on ``picows``;
- ``tracking``: what a dashboard client saw, latency and missed-update accounting;
- ``shared``: arrays shared by the processes (send times, accepted heartbeats);
- ``generator`` / ``clients``: the worker-simulating and dashboard-simulating processes;
- ``monitor`` / ``local_master``: CPU/RSS of a pid, a fresh master per run;
- ``runner``: one run end to end; ``report`` / ``plot``: JSON lines, tables, PNG;
- ``cli``: the ``cloudai bench`` command.
"""
