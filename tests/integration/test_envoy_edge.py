"""Envoy's edge behaviour in the rendered bootstrap, through the real binary.

Every reply Envoy itself makes is an OpenAI error object; a frozen or absent Quorum gets a bounded,
OpenAI-shaped answer; hostile clients hit limits; the client's credentials never reach a backend;
the access log is one JSON object per line; and the framing backends see is the documented one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import yaml
from builders import PORT_KEYS, config_text

from extproc.dev.stack import Stack, free_port

STALL_TIMEOUT = 2.0
HEADERS_TIMEOUT = 1.0
H2_STREAMS = 16
MAX_BODY = 64 * 1024
LARGE_KEY = "sk-quorum-edge-large"
CLIENT_SECRET = "sk-client-gateway-secret-7f3a"
CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "hello"}]}


def edge_config(workdir: Path, body_mode: str, **envoy: Any) -> Path:
    """The test config with short edge timeouts, a file access log, and one model that opts in to the client's key."""
    ports = {key: free_port() for key in PORT_KEYS}
    cfg = yaml.safe_load(config_text(max_body=MAX_BODY, body_mode=body_mode, **ports))
    limits = {
        "request_headers_timeout": f"{HEADERS_TIMEOUT}s",
        "max_request_headers_count": 50,
        "http2_max_concurrent_streams": H2_STREAMS,
    }
    limits.update(envoy.pop("limits", {}))
    access_log = str(workdir / "access.log")
    cfg["envoy"].update(stall_timeout=f"{STALL_TIMEOUT}s", access_log=access_log, limits=limits, **envoy)
    cfg["providers"]["models"][1]["forward_client_auth"] = True  # demo-coder
    path = workdir / "quorum.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def edge_stack(workdir: Path, body_mode: str = "full_duplex_streamed", **envoy: Any) -> Stack:
    """A stack not started yet: `with edge_stack(...) as stack:` runs and stops it."""
    os.environ["QUORUM_TEST_LARGE_KEY"] = LARGE_KEY
    return Stack(edge_config(workdir, body_mode, **envoy), workdir)


@pytest.fixture(scope="module", params=["full_duplex_streamed", "buffered"])
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with edge_stack(tmp_path_factory.mktemp(f"edge-{request.param}"), request.param) as running:
        yield running


def process(stack: Stack, name: str) -> Any:
    return next(proc for proc_name, proc in stack.processes if proc_name == name)


def assert_openai_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert isinstance(error["message"], str) and error["message"].strip()
    assert not error["message"].lstrip().startswith("{"), "an error object wrapped inside another"
    return error


def raw_exchange(stack: Stack, request: bytes, wait: float = 5.0) -> bytes:
    """Send bytes on a raw connection and read until Envoy closes it (or `wait` passes)."""
    host, port = stack.envoy_url.removeprefix("http://").split(":")
    data = b""
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    return data


def parse_raw(data: bytes) -> httpx.Response:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


def backend_requests(stack: Stack, model: str) -> list[dict[str, Any]]:
    base = stack.config.model(model).base_url.removesuffix("/v1")
    return httpx.get(f"{base}/_fake/requests").json()["requests"]


# ---------------------------------------------------------------- Envoy's own replies


def test_unrouted_path_gets_one_error_object(edge: Stack) -> None:
    response = httpx.get(f"{edge.envoy_url}/not-an-api")
    error = assert_openai_error(response, 404, "invalid_request_error")
    assert error["code"] == "unknown_url"


def test_quorum_own_errors_pass_through_unchanged(edge: Stack) -> None:
    response = httpx.post(f"{edge.envoy_url}/v1/chat/completions", json={**CHAT, "model": "no-such-model"})
    error = assert_openai_error(response, 404, "invalid_request_error")
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


def test_body_too_large_is_413(edge: Stack) -> None:
    def chunks() -> Iterator[bytes]:  # chunked: no content-length for Quorum to refuse at the headers
        yield b'{"model": "demo-small", "messages": [{"role": "user", "content": "'
        for _ in range(4):
            yield b"x" * MAX_BODY
        yield b'"}]}'

    response = httpx.post(f"{edge.envoy_url}/v1/chat/completions", content=chunks(), timeout=20)
    assert_openai_error(response, 413, "invalid_request_error")


@pytest.mark.parametrize(
    ("request_bytes", "status", "error_type"),
    [
        (b"GET /v1/models#fragment HTTP/1.1\r\nHost: q\r\n\r\n", 400, "invalid_request_error"),
        (
            b"GET /v1/models HTTP/1.1\r\nHost: q\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            403,
            "permission_error",
        ),
        (b"GET /v1/models HTTP/1.1\r\nHost: q\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "invalid_request_error"),
        (
            b"GET /v1/models HTTP/1.1\r\nHost: q\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(60)) + b"\r\n",
            431,
            "invalid_request_error",
        ),
        (b"GET /v1/models HTTP/9.9\r\nHost: q\r\n\r\n", 426, "invalid_request_error"),
    ],
    ids=["hash-in-path", "upgrade", "header-too-large", "too-many-headers", "bad-version"],
)
def test_envoy_4xx_are_openai_errors(edge: Stack, request_bytes: bytes, status: int, error_type: str) -> None:
    response = parse_raw(raw_exchange(edge, request_bytes))
    assert_openai_error(response, status, error_type)


def test_unfinished_headers_get_408_within_the_timeout(edge: Stack) -> None:
    started = time.monotonic()
    data = raw_exchange(edge, b"POST /v1/chat/completions HTTP/1.1\r\nHost: q\r\n", wait=HEADERS_TIMEOUT + 8)
    elapsed = time.monotonic() - started
    # Envoy closes the connection after its 1 s delayed-close wait; the rest is margin for a busy machine.
    assert elapsed < HEADERS_TIMEOUT + 4, "the connection was held past the headers timeout"
    if data:  # Envoy may answer 408 before closing; whatever it says is an OpenAI error
        assert_openai_error(parse_raw(data), 408, "invalid_request_error")


def test_http2_clients_get_the_stream_and_window_limits(edge: Stack) -> None:
    host, port = edge.envoy_url.removeprefix("http://").split(":")
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        events = conn.receive_data(sock.recv(65536))
    (settings,) = [e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)]
    changed = {code: setting.new_value for code, setting in settings.changed_settings.items()}
    assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == H2_STREAMS
    assert changed[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 65536


# ---------------------------------------------------------------- Quorum frozen (down: test_server.py)


@pytest.mark.parametrize(
    ("body_mode", "connected"),
    [("full_duplex_streamed", True), ("full_duplex_streamed", False), ("buffered", True)],
    ids=["duplex", "duplex-before-any-connection", "buffered"],
)
def test_frozen_quorum_gets_504_within_the_stall_timeout(tmp_path: Path, body_mode: str, connected: bool) -> None:
    """Full duplex: the keepalive finds the frozen process; buffered: the per-message timeout fires."""
    with edge_stack(tmp_path, body_mode) as stack:
        quorum = process(stack, "quorum")
        url = f"{stack.envoy_url}/v1/chat/completions"
        if connected:  # the ext_proc connection is up before Quorum freezes
            assert httpx.post(url, json=CHAT).status_code == 200
        os.killpg(quorum.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = httpx.post(url, json=CHAT, timeout=60)
            elapsed = time.monotonic() - started
        finally:
            os.killpg(quorum.pid, signal.SIGCONT)  # so that it hears the SIGTERM of the teardown
    error = assert_openai_error(response, 504, "server_error")
    assert error["code"] == "router_timeout"
    assert elapsed < STALL_TIMEOUT + 3


def test_a_fusion_run_longer_than_the_stall_timeout_is_not_cut(edge: Stack) -> None:
    """A live Quorum answers the keepalive pings while it deliberates."""
    question = f"compare a and b [[fake:delay_ms={int((STALL_TIMEOUT + 1) * 1000)}]]"
    fusion = {**CHAT, "model": "quorum/fusion", "messages": [{"role": "user", "content": question}]}
    response = httpx.post(f"{edge.envoy_url}/v1/chat/completions", json=fusion, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["fusion"]["failed_models"] == []


def test_slow_backend_is_an_openai_504(tmp_path: Path) -> None:
    with edge_stack(tmp_path, upstream_timeout="1s") as stack:
        response = httpx.post(
            f"{stack.envoy_url}/v1/chat/completions", json=CHAT, headers={"x-fake-delay-ms": "3000"}, timeout=20
        )
    error = assert_openai_error(response, 504, "server_error")
    assert error["code"] in {"upstream_response_timeout", "stream_idle_timeout"}  # both are upstream_timeout


def test_backend_down_is_an_openai_503(tmp_path: Path) -> None:
    with edge_stack(tmp_path) as stack:
        backend = process(stack, "fake-demo-small")
        os.killpg(backend.pid, signal.SIGKILL)
        backend.wait()
        response = httpx.post(f"{stack.envoy_url}/v1/chat/completions", json=CHAT, timeout=20)
    error = assert_openai_error(response, 503, "server_error")
    assert "upstream" in error["code"]


def test_overload_shedding_is_an_openai_503(tmp_path: Path) -> None:
    with edge_stack(tmp_path, limits={"max_heap_bytes": 1024 * 1024}) as stack:  # below Envoy's own heap
        response = httpx.post(f"{stack.envoy_url}/v1/chat/completions", json=CHAT, timeout=10)
    error = assert_openai_error(response, 503, "server_error")
    assert error["code"] == "overloaded"
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("body_mode", ["full_duplex_streamed", "buffered"])
def test_fusion_timeout_caps_only_what_quorum_answers_itself(tmp_path: Path, body_mode: str) -> None:
    with edge_stack(tmp_path, body_mode, fusion_timeout="1s", max_message_timeout="30s") as stack:
        url = f"{stack.envoy_url}/v1/chat/completions"
        routed = httpx.post(url, json=CHAT, headers={"x-fake-delay-ms": "1500"}, timeout=20)
        question = "compare a and b [[fake:delay_ms=1500]]"  # the panel calls are Quorum's own: no headers
        fusion = {**CHAT, "model": "quorum/fusion", "messages": [{"role": "user", "content": question}]}
        deliberated = httpx.post(url, json=fusion, timeout=20)
    assert routed.status_code == 200, "a routed request was cut by the fusion cap"
    error = assert_openai_error(deliberated, 504, "server_error")
    assert error["code"] == "request_timeout"


# ---------------------------------------------------------------- what backends see


CREDENTIALS = {
    "authorization": f"Bearer {CLIENT_SECRET}",
    "x-api-key": CLIENT_SECRET,
    "api-key": CLIENT_SECRET,
    "x-goog-api-key": CLIENT_SECRET,
    "proxy-authorization": f"Basic {CLIENT_SECRET}",
}
CREDENTIAL_NAMES = set(CREDENTIALS)


def routed_headers(stack: Stack, model: str) -> dict[str, str]:
    body = {**CHAT, "model": model}
    response = httpx.post(f"{stack.envoy_url}/v1/chat/completions", json=body, headers=CREDENTIALS)
    assert response.status_code == 200, response.text
    return backend_requests(stack, model)[-1]["headers"]


def test_client_credentials_do_not_reach_a_backend(edge: Stack) -> None:
    seen = routed_headers(edge, "demo-small")
    assert not CREDENTIAL_NAMES & set(seen)


def test_a_model_with_its_own_key_gets_only_that_key(edge: Stack) -> None:
    seen = routed_headers(edge, "demo-large")
    assert seen["authorization"] == f"Bearer {LARGE_KEY}"
    assert not (CREDENTIAL_NAMES - {"authorization"}) & set(seen)


def test_forward_client_auth_opts_in_per_model(edge: Stack) -> None:
    seen = routed_headers(edge, "demo-coder")
    assert seen["authorization"] == f"Bearer {CLIENT_SECRET}"
    assert seen["x-api-key"] == CLIENT_SECRET


def test_client_secret_is_in_no_log(edge: Stack) -> None:
    routed_headers(edge, "demo-small")
    routed_headers(edge, "demo-coder")
    for log in edge.workdir.glob("*.log"):
        assert CLIENT_SECRET not in log.read_text(encoding="utf-8", errors="replace"), log.name


def test_body_framing_the_backend_saw(edge: Stack) -> None:
    """Buffered mode sends content-length; full duplex cannot (Envoy 1.40 drops it), see docs/envoy.md."""
    body = {**CHAT, "model": "quorum/auto"}
    assert httpx.post(f"{edge.envoy_url}/v1/chat/completions", json=body).status_code == 200
    seen = backend_requests(edge, "demo-small")[-1]
    headers = seen["headers"]
    if edge.config.envoy.request_body_mode == "buffered":
        assert headers.get("transfer-encoding") is None
        assert int(headers["content-length"]) == len(json.dumps(seen["body"], separators=(",", ":")))
    else:
        assert headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in headers


# ---------------------------------------------------------------- the access log


def test_access_log_is_one_json_object_per_line(edge: Stack) -> None:
    request_id = f"edge-{time.monotonic_ns()}"
    body = {**CHAT, "model": "quorum/auto"}
    response = httpx.post(f"{edge.envoy_url}/v1/chat/completions", json=body, headers={"x-request-id": request_id})
    assert response.status_code == 200
    path = edge.workdir / "access.log"
    deadline = time.monotonic() + 10
    entry = None
    while entry is None and time.monotonic() < deadline:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        entries = [json.loads(line) for line in lines]  # every line parses on its own
        entry = next((e for e in entries if e["request_id"] == request_id), None)
        time.sleep(0.1)
    assert entry is not None, "no access log line for the request"
    assert entry["status"] == 200
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/chat/completions"
    assert entry["model"] == "demo-small"
    assert entry["decision"] == "default"
    assert entry["upstream_cluster"] == "demo_small"
    assert isinstance(entry["duration_ms"], int)
