#!/usr/bin/env bash
# Regenerates the Python stubs from src/cloudai/proto/cluster.proto.
# Usage: scripts/gen_proto.sh [OUTPUT_ROOT]   (default: src)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-src}"
python="${PYTHON:-python}"
[ -x .venv/bin/python ] && python=.venv/bin/python
mkdir -p "$out/cloudai/proto"
"$python" -m grpc_tools.protoc -I src --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" src/cloudai/proto/cluster.proto
