#!/usr/bin/env bash
# Checks a running master: GET /health, then streams telemetry for a few messages.
# Usage: scripts/test_telemetry_websocket.sh [HOST:PORT] [WORKER_ID] [COUNT]
set -euo pipefail
addr="${1:-127.0.0.1:${HTTP_PORT:-8080}}"
addr="${addr#:}"; [[ "$addr" == *:* ]] || addr="127.0.0.1:$addr"
worker="${2:-}"
count="${3:-5}"
cd "$(dirname "$0")/.."
python=python3; [ -x .venv/bin/python ] && python=.venv/bin/python

echo "== GET http://$addr/health"
"$python" - "$addr" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/health", timeout=5) as r:
    body = json.load(r)
print(json.dumps(body, indent=2))
assert body["status"] == "healthy", body
PY

echo "== streaming ws://$addr/ws/telemetry${worker:+/$worker} ($count messages)"
args=(watch --url "ws://$addr" --count "$count" --json)
[ -n "$worker" ] && args+=(--worker "$worker")
exec "$python" -m cloudai "${args[@]}"
