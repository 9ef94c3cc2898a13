#!/usr/bin/env bash
# Regenerates the Python stubs from src/cloudai/proto/cluster.proto.
# Usage: scripts/gen_proto.sh [OUTPUT_ROOT]   (default: src)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-src}"
if [ -n "${PYTHON:-}" ]; then python=$PYTHON
elif [ -x .venv/bin/python ]; then python=.venv/bin/python
else python=python3; fi
mkdir -p "$out/cloudai/proto"
"$python" -m grpc_tools.protoc -I src --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" src/cloudai/proto/cluster.proto
