"""Taking models off a running Envoy's fast path through its admin endpoint (extproc/envoy_runtime.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from builders import config_text

from extproc.config import parse_config
from extproc.envoy_runtime import admin_url, take_off_fast_path


class _Admin(BaseHTTPRequestHandler):
    """Envoy's admin as far as /runtime_modify goes: records the query, answers `status`."""

    status = 200
    seen: list[str] = []

    def do_POST(self) -> None:
        type(self).seen.append(self.path)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"OK\n" if self.status == 200 else b"No admin layer specified\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def admin() -> Iterator[type[_Admin]]:
    _Admin.seen, _Admin.status = [], 200
    server = HTTPServer(("127.0.0.1", 0), _Admin)
    _Admin.port = server.server_port  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _Admin
    server.shutdown()
    server.server_close()


def test_the_models_runtime_keys_are_set_to_zero(admin) -> None:
    config = parse_config(config_text(admin_port=admin.port))
    assert take_off_fast_path(config, ["demo-small", "demo-coder"]) == (("demo-small", "demo-coder"), "")
    assert admin.seen == ["/runtime_modify?quorum.fast_path.demo-small=0&quorum.fast_path.demo-coder=0"]


def test_nothing_to_take_off_calls_nobody(admin) -> None:
    assert take_off_fast_path(parse_config(config_text(admin_port=admin.port)), []) == ((), "")
    assert admin.seen == []


def test_an_envoy_without_the_admin_layer_is_reported_not_raised(admin) -> None:
    admin.status = 503
    taken_off, problem = take_off_fast_path(parse_config(config_text(admin_port=admin.port)), ["demo-small"])
    assert taken_off == ()
    assert "answered 503 (No admin layer specified)" in problem


def test_an_unreachable_admin_is_reported_not_raised() -> None:
    taken_off, problem = take_off_fast_path(parse_config(config_text(admin_port=1)), ["demo-small"])
    assert taken_off == ()
    assert "not reachable from Quorum" in problem


@pytest.mark.parametrize(
    ("admin_listen", "url"),
    [
        ("127.0.0.1:9901", "http://127.0.0.1:9901"),
        ("0.0.0.0:9901", "http://127.0.0.1:9901"),
        ("[::1]:9901", "http://[::1]:9901"),
    ],
)
def test_admin_url(admin_listen: str, url: str) -> None:
    text = config_text().replace("admin: 127.0.0.1:1", f'admin: "{admin_listen}"')
    assert admin_url(parse_config(text)) == url
