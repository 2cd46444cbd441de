"""`quorum serve` as an operator runs it behind a real Envoy: hot reload (file edit, SIGHUP, an
invalid edit), SIGTERM draining an in-flight stream, and start-up failures that say what is wrong."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from builders import chat
from conftest import LARGE_KEY, write_config
from grpc_health.v1 import health_pb2
from test_server import _health

from extproc.dev.stack import Stack, StartFailed

pytestmark = pytest.mark.integration

CODING_TO_SMALL = ("modelRefs: [{model: demo-coder}]", "modelRefs: [{model: demo-small}]")
ENV = {"QUORUM_TEST_LARGE_KEY": LARGE_KEY, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@contextmanager
def running(tmp_path: Path, server: str = "drain_delay: 0s", **stack_options) -> Iterator[tuple[Stack, Path, dict]]:
    path, ports = write_config(tmp_path)
    path.write_text(path.read_text().replace("drain_delay: 0s", server))
    os.environ["QUORUM_TEST_LARGE_KEY"] = LARGE_KEY
    try:
        with Stack(path, tmp_path, **stack_options) as stack:
            yield stack, path, ports
    finally:
        os.environ.pop("QUORUM_TEST_LARGE_KEY", None)


def replace_file(path: Path, text: str) -> None:
    """Write a new version the way editors and Kubernetes ConfigMaps do: a new file renamed over."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def quorum(stack: Stack) -> subprocess.Popen[bytes]:
    return dict(stack.processes)["quorum"]


def metric(ports: dict, line_start: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{ports['metrics_port']}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class Load:
    """A bounded background load of routed requests; records (sent, status, routed model)."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.results: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            deadline = time.monotonic() + 30  # bounded even if the test forgets to stop it
            while not self.stop.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    response = client.post("/v1/chat/completions", json=chat("fix my python code"))
                    self.results.append((sent, response.status_code, response.headers.get("x-quorum-model")))
                except httpx.HTTPError as exc:
                    self.results.append((sent, 0, type(exc).__name__))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_config_edit_reroutes_within_2s_under_load_with_no_failed_request(tmp_path):
    with running(tmp_path) as (stack, path, ports):
        text = path.read_text()
        with Load(stack.envoy_url) as load:
            wait_for(lambda: len(load.results) > 10)
            edited = time.monotonic()
            replace_file(path, text.replace(*CODING_TO_SMALL))
            wait_for(lambda: any(sent > edited + 2.0 for sent, _, _ in load.results))
            time.sleep(0.3)
        assert {status for _, status, _ in load.results} == {200}, "a request failed during the swap"
        before = [model for sent, _, model in load.results if sent < edited]
        after = [model for sent, _, model in load.results if sent > edited + 2.0]
        assert set(before) == {"demo-coder"}
        assert after and set(after) == {"demo-small"}
        assert metric(ports, 'quorum_config_reloads_total{result="success"}') == 1
        assert metric(ports, "quorum_config_generation") == 2
        assert quorum(stack).poll() is None


def test_an_invalid_edit_keeps_the_old_routing_and_counts_a_failure(tmp_path):
    with running(tmp_path) as (stack, path, ports):
        text = path.read_text()
        replace_file(path, text.replace("{model: demo-coder}", "{model: nowhere}"))
        wait_for(lambda: metric(ports, 'quorum_config_reloads_total{result="failure"}') == 1, timeout=15)
        response = httpx.post(f"{stack.envoy_url}/v1/chat/completions", json=chat("fix my python code"), timeout=10)
        assert response.status_code == 200
        assert response.headers["x-quorum-model"] == "demo-coder"
        assert metric(ports, "quorum_config_last_reload_successful") == 0
        assert metric(ports, "quorum_config_generation") == 1
        log = (tmp_path / "quorum.log").read_text()
        assert "unknown model 'nowhere'" in log
        assert "still serving generation 1" in log


def test_sighup_reloads_and_does_not_kill(tmp_path):
    with running(tmp_path, server="drain_delay: 0s, watch_interval: 0s") as (stack, path, ports):
        replace_file(path, path.read_text().replace(*CODING_TO_SMALL))
        time.sleep(1.5)  # polling is off: nothing happens until the signal
        url = f"{stack.envoy_url}/v1/chat/completions"
        assert httpx.post(url, json=chat("python"), timeout=10).headers["x-quorum-model"] == "demo-coder"
        quorum(stack).send_signal(signal.SIGHUP)
        wait_for(lambda: metric(ports, 'quorum_config_reloads_total{result="success"}') == 1, timeout=15)
        response = httpx.post(url, json=chat("python"), timeout=10, headers={"x-request-id": "after-sighup"})
        assert response.status_code == 200
        assert response.headers["x-quorum-model"] == "demo-small"
        assert quorum(stack).poll() is None
    # the access log: bare JSON lines (stdout) among the text log lines (stderr) of quorum.log
    access = [json.loads(line) for line in (tmp_path / "quorum.log").read_text().splitlines() if line.startswith("{")]
    assert [(a["decision"], a["model"]) for a in access if a["request_id"] == "after-sighup"] == [
        ("coding", "demo-small")
    ]


def test_sigterm_drains_an_in_flight_fusion_stream_and_exits_0(tmp_path):
    with running(tmp_path, server="drain_delay: 1s, grace_period: 10s") as (stack, _, ports):
        chunks: list[bytes] = []
        first_bytes = threading.Event()

        def stream() -> None:
            body = {**chat("compare these [[fake:delay_ms=2500]]"), "stream": True}
            with httpx.stream("POST", f"{stack.envoy_url}/v1/chat/completions", json=body, timeout=30) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    first_bytes.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first_bytes.wait(10), "the fusion stream did not start"
        proc = quorum(stack)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # inside the drain delay: Envoy's health check and /readyz see NOT_SERVING
        port = int(stack.config.server.listen.rsplit(":", 1)[1])
        assert _health(port, time.monotonic() + 2) == health_pb2.HealthCheckResponse.NOT_SERVING
        readyz = httpx.get(f"http://127.0.0.1:{ports['metrics_port']}/readyz", timeout=2)
        assert readyz.status_code == 503
        assert proc.wait(timeout=20) == 0
        reader.join(timeout=10)
        body = b"".join(chunks)
        assert body.rstrip().endswith(b"data: [DONE]"), body[-300:]
        assert b'"error"' not in body
        log = (tmp_path / "quorum.log").read_text()
        assert "draining in-flight streams" in log and "stopped" in log
        assert "Traceback" not in log


def _serve(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "extproc", "serve", "--config", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env or ENV)


@contextmanager
def _occupied() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


@pytest.mark.parametrize("which", ["grpc_port", "metrics_port"])
def test_a_port_in_use_gives_one_line_and_exit_1(tmp_path, which):
    with _occupied() as port:
        path, _ = write_config(tmp_path, **{which: port})
        result = _serve(path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    setting = "server.listen" if which == "grpc_port" else "observability.metrics.listen"
    assert lines[0] == f"error: cannot listen on 127.0.0.1:{port} ({setting}): the port is already in use"


def test_a_missing_key_variable_gives_one_line_and_exit_2(tmp_path):
    path, _ = write_config(tmp_path)
    result = _serve(path, env={"PATH": ENV["PATH"]})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: providers.models[2].api_key_env: environment variable QUORUM_TEST_LARGE_KEY is not set"
    ]


def test_a_second_demo_fails_loudly(tmp_path):
    with running(tmp_path) as (stack, path, _):
        demo = subprocess.run(
            [sys.executable, "-m", "extproc", "demo", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=90,
            env=ENV,
        )
        assert demo.returncode == 1
        assert "demo is up" not in demo.stdout
        assert "error: quorum demo did not start:" in demo.stderr
        assert "cannot listen on" in demo.stderr and "the port is already in use" in demo.stderr
        assert httpx.get(f"{stack.envoy_url}/v1/models", timeout=5).status_code == 200  # the first one is unharmed


def test_sigterm_of_the_demo_stops_everything_without_a_traceback(tmp_path):
    path, _ = write_config(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "extproc", "demo", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    seen: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "demo is up" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(60), "".join(seen)
        proc.send_signal(signal.SIGHUP)  # forwarded to quorum serve: a reload, not the end of the demo
        time.sleep(1.0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=5)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopping" in "".join(seen)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    workdir = next(line.split("logs in ")[1].split(")")[0] for line in seen if "logs in " in line)
    assert "config reload (SIGHUP)" in (Path(workdir) / "quorum.log").read_text()
    with pytest.raises(httpx.HTTPError):  # Envoy went with it
        httpx.get(f"{Stack(path, tmp_path).admin_url}/ready", timeout=1)


def test_a_process_that_dies_at_start_up_is_named_with_its_log(tmp_path, monkeypatch):
    path, _ = write_config(tmp_path)
    monkeypatch.setenv("ENVOY_BIN", "/bin/false")  # an "Envoy" that exits at once, as on a bad bootstrap
    monkeypatch.setenv("QUORUM_TEST_LARGE_KEY", LARGE_KEY)
    with pytest.raises(StartFailed) as failure:
        Stack(path, tmp_path).start()
    assert str(failure.value).startswith(f"envoy exited with code 1; see {tmp_path}/envoy.log")


def _two_free_ports() -> int:
    """A port p with p + 1 also free (workers listen on consecutive ports)."""
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            base = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
            return base


def test_every_worker_reloads_on_an_edit_and_on_sighup_to_the_parent(tmp_path):
    grpc_port, metrics_port = _two_free_ports(), _two_free_ports()
    path, _ = write_config(tmp_path, grpc_port=grpc_port, metrics_port=metrics_port)
    argv = [sys.executable, "-m", "extproc", "serve", "--config", str(path), "--workers", "2"]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    workers = [{"metrics_port": metrics_port}, {"metrics_port": metrics_port + 1}]
    try:
        for port in (grpc_port, grpc_port + 1):
            assert _health(port, deadline=time.monotonic() + 30) == health_pb2.HealthCheckResponse.SERVING
        replace_file(path, path.read_text().replace(*CODING_TO_SMALL))
        for worker in workers:
            wait_for(lambda w=worker: metric(w, "quorum_config_generation") == 2, timeout=15)
        proc.send_signal(signal.SIGHUP)  # forwarded to each worker: the files are unchanged since
        for worker in workers:
            wait_for(lambda w=worker: metric(w, 'quorum_config_reloads_total{result="unchanged"}') == 1, timeout=15)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
