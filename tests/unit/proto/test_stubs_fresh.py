"""The committed stubs must be exactly what scripts/gen_proto.sh makes of cluster.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
GENERATED = ("cluster_pb2.py", "cluster_pb2.pyi", "cluster_pb2_grpc.py")


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        cwd=REPO,
    )
    for name in GENERATED:
        fresh = (tmp_path / "cloudai" / "proto" / name).read_text()
        committed = (REPO / "src" / "cloudai" / "proto" / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/gen_proto.sh"
