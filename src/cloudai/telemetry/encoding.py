"""JSON encoding of telemetry frames, in the contract's shape. Pure; no I/O.

A *fragment* is one worker's entry, ``"worker-1":{...}``, encoded once per update.
A *frame* is a JSON object of one or more fragments: ``{"w1":{...},"w2":{...}}``.
Frames are built by joining already-encoded fragments, so nothing is ever
serialised per client.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from cloudai.telemetry.model import WorkerTelemetry

EMPTY_FRAME = b"{}"


def encode_fragment(state: WorkerTelemetry) -> bytes:
    return orjson.dumps({state.worker_id: state.to_json()})[1:-1]


def join_fragments(fragments: Iterable[bytes]) -> bytes:
    return b"{" + b",".join(fragments) + b"}"
