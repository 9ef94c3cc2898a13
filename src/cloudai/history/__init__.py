"""Telemetry history: every heartbeat for a day, per-minute and per-hour min/avg/max for
longer (docs/HISTORY.md). ``tiers`` and ``query`` are pure; ``recorder`` writes and reads
the store."""
