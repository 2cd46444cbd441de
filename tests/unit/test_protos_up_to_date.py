"""The committed generated code in extproc/pb matches what protos/generate.sh produces now."""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "protos" / "generate.sh"
PB = ROOT / "extproc" / "pb"
GRPC_STUB = PB / "envoy" / "service" / "ext_proc" / "v3" / "external_processor_pb2_grpc.py"


def _tree(base: Path) -> dict[str, bytes]:
    root = base / "envoy"
    return {
        p.relative_to(base).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in {".py", ".pyi"}
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpc_tools (grpcio-tools) is not installed, cannot regenerate protos")
    if shutil.which("bash") is None:
        pytest.skip("bash is not available to run protos/generate.sh")

    # Generated code embeds the generator's version; a different grpcio-tools (and so
    # protoc) legitimately produces different bytes, so only compare like with like.
    match = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", GRPC_STUB.read_text())
    assert match, f"{GRPC_STUB} has no GRPC_GENERATED_VERSION; run `make protos`"
    installed = importlib.metadata.version("grpcio-tools")
    if installed != match.group(1):
        pytest.skip(
            f"extproc/pb was generated with grpcio-tools {match.group(1)}, but {installed} is installed; "
            "install that version (or regenerate with `make protos` and commit) to check freshness"
        )

    proc = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"generate.sh failed:\n{proc.stdout}\n{proc.stderr}"

    fresh, committed = _tree(tmp_path), _tree(PB)
    assert fresh, "generate.sh produced nothing"
    missing = sorted(set(fresh) - set(committed))
    stale = sorted(set(committed) - set(fresh))
    assert not missing and not stale, (
        f"run `make protos`: missing in extproc/pb: {missing}; not generated any more: {stale}"
    )
    for name, data in fresh.items():
        if data != committed[name]:
            diff = "".join(
                difflib.unified_diff(
                    committed[name].decode(errors="replace").splitlines(keepends=True),
                    data.decode(errors="replace").splitlines(keepends=True),
                    f"committed/{name}",
                    f"fresh/{name}",
                )
            )
            pytest.fail(f"extproc/pb/{name} is out of date, run `make protos`:\n{diff[:4000]}")
