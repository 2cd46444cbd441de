"""Envoy verifies `https` model backends: a throwaway CA (trustme) and a TLS backend on 127.0.0.2.

The backend address is outside the dev stack's fake-backend set, so the test serves it itself.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml
from builders import PORT_KEYS, config_text

from extproc.dev.stack import Stack, free_port

TLS_HOST = "127.0.0.2"
FALLBACK_HOST = "127.0.0.3"
ANSWER = {
    "id": "chatcmpl-tls",
    "object": "chat.completion",
    "created": 0,
    "model": "small-v1",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "over tls"}, "finish_reason": "stop"}],
}


class _Answer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_backend(ca: trustme.CA) -> Iterator[int]:
    yield from _serve_tls(ca, TLS_HOST)


@pytest.fixture(scope="module")
def fallback_tls_backend(ca: trustme.CA) -> Iterator[int]:
    yield from _serve_tls(ca, FALLBACK_HOST)


def _serve_tls(ca: trustme.CA, host: str) -> Iterator[int]:
    """A TLS backend on `host` with a certificate for that address only, signed by `ca`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(host).configure_cert(context)
    server = ThreadingHTTPServer((host, 0), _Answer)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def tls_stack(workdir: Path, backend_port: int, tls: dict[str, Any], fallback_port: int | None = None) -> Stack:
    """demo-small on the TLS backend; with `fallback_port`, demo-small falls back to demo-coder on the
    second TLS backend (another host, so another certificate and SNI on the same chain cluster)."""
    ports = {key: free_port() for key in PORT_KEYS}
    cfg = yaml.safe_load(config_text(**ports))
    small, coder = cfg["providers"]["models"][:2]
    small["base_url"] = f"https://{TLS_HOST}:{backend_port}/v1"
    if fallback_port is not None:
        small["fallbacks"] = [coder["name"]]
        coder["base_url"] = f"https://{FALLBACK_HOST}:{fallback_port}/v1"
    cfg["envoy"]["tls"] = tls
    path = workdir / "quorum.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    os.environ["QUORUM_TEST_LARGE_KEY"] = "sk-tls-test"
    return Stack(path, workdir)


def ask(stack: Stack) -> httpx.Response:
    body = {"model": "demo-small", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{stack.envoy_url}/v1/chat/completions", json=body, timeout=20)


def test_a_backend_signed_by_the_configured_ca_is_reached(tmp_path: Path, ca: trustme.CA, tls_backend: int) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with tls_stack(tmp_path, tls_backend, {"ca_bundle": str(ca_file)}) as stack:
        response = ask(stack)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "over tls"


def test_an_unknown_ca_is_refused_by_default(tmp_path: Path, tls_backend: int) -> None:
    with tls_stack(tmp_path, tls_backend, {}) as stack:  # the system bundle does not know the test CA
        response = ask(stack)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert "CERTIFICATE_VERIFY_FAILED" in error["code"] or "TLS_error" in error["code"]


def test_verification_can_be_turned_off(tmp_path: Path, tls_backend: int) -> None:
    with tls_stack(tmp_path, tls_backend, {"verify": False}) as stack:
        response = ask(stack)
    assert response.status_code == 200, response.text


def test_a_fallback_chain_verifies_each_backend_by_its_own_name(
    tmp_path: Path, ca: trustme.CA, fallback_tls_backend: int
) -> None:
    """demo-small's backend is down, so the chain's second priority (another host) answers, over TLS
    checked against the CA and that host's own name (a certificate for the first host would not do)."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    down = free_port()
    with tls_stack(tmp_path, down, {"ca_bundle": str(ca_file)}, fallback_port=fallback_tls_backend) as stack:
        response = ask(stack)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "over tls"
    assert response.headers["x-quorum-model"] == "demo-coder"


def test_a_fallback_chain_refuses_an_unknown_ca(tmp_path: Path, fallback_tls_backend: int) -> None:
    with tls_stack(tmp_path, free_port(), {}, fallback_port=fallback_tls_backend) as stack:
        response = ask(stack)
    assert response.status_code == 503, response.text
