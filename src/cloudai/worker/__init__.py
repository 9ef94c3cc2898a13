"""The CloudAI worker: samples its machine, heartbeats to a master, runs tasks.

See docs/WORKER.md. Entry point: ``cloudai worker`` (cli.py) -> WorkerSettings ->
WorkerNode (node.py).
"""
