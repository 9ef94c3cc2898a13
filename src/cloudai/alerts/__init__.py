"""Alert rules on the workers' telemetry (docs/ALERTS.md).

``rules`` (rules and silences: data and parsing) and ``engine`` (the state machine of
every (rule, worker) pair) are pure: no asyncio, no I/O, times passed in.
``payload`` shapes notifications for Alertmanager-compatible webhooks; ``webhook`` sends
them (asyncio, aiohttp); ``manager`` runs the engine inside the master.
"""
