"""Taking models off a running Envoy's fast path through its admin endpoint (extproc/envoy_runtime.py)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from builders import config_text, jailbreak_guard

from extproc.config import parse_config
from extproc.envoy_runtime import admin_url, keep_off_at_start, take_off_fast_path


class _Admin(BaseHTTPRequestHandler):
    """Envoy's admin as far as /runtime_modify goes: records the query, answers `status`."""

    status = 200
    seen: list[str] = []
    layers: list[str] = ["static", "admin"]  # GET /runtime's layers (the admin one: a fast path was rendered)

    def do_GET(self) -> None:
        body = json.dumps({"layers": self.layers, "entries": {}}).encode()
        self.send_response(200 if self.path == "/runtime" else 404)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        type(self).seen.append(self.path)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"OK\n" if self.status == 200 else b"No admin layer specified\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def admin() -> Iterator[type[_Admin]]:
    _Admin.seen, _Admin.status, _Admin.layers = [], 200, ["static", "admin"]
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


def test_an_envoy_without_the_admin_layer_is_found_by_a_get_and_sent_nothing(admin) -> None:
    """At reload as at start: a `runtime_modify` Envoy cannot apply is an error line in its log."""
    admin.layers = ["static"]
    taken_off, problem = take_off_fast_path(parse_config(config_text(admin_port=admin.port)), ["demo-small"])
    assert taken_off == () and "No admin layer specified" in problem
    assert admin.seen == []


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


FAST = "  fast_path: true\n"


def test_at_start_every_model_the_config_keeps_on_quorum_leaves_the_fast_path(admin) -> None:
    """demo-small is guarded, demo-large has an API key: both off; demo-coder is fast-pathed: left alone."""
    config = parse_config(config_text(admin_port=admin.port, envoy_extra=FAST, extra=jailbreak_guard("demo-small")))
    assert keep_off_at_start(config) == ("demo-small", "demo-large")
    assert admin.seen == ["/runtime_modify?quorum.fast_path.demo-small=0&quorum.fast_path.demo-large=0"]


def test_at_start_models_never_opted_in_leave_it_too(admin) -> None:
    """An Envoy rendered from an earlier config may have fast-pathed a model this config opts out."""
    assert keep_off_at_start(parse_config(config_text(admin_port=admin.port))) == (
        "demo-small",
        "demo-coder",
        "demo-large",
    )


@pytest.mark.parametrize(
    ("envoy_extra", "level"), [(FAST, logging.WARNING), ("", logging.INFO)], ids=["fast-path-on", "fast-path-off"]
)
def test_at_start_an_unreachable_admin_warns_only_when_the_config_uses_the_fast_path(
    envoy_extra: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="extproc.envoy_runtime")
    assert keep_off_at_start(parse_config(config_text(admin_port=1, envoy_extra=envoy_extra))) == ()
    (record,) = caplog.records
    assert record.levelno == level
    assert "not reachable from Quorum" in record.getMessage() and "quorum envoy-config" in record.getMessage()


def test_at_start_an_envoy_without_any_fast_path_is_not_a_warning(admin, caplog: pytest.LogCaptureFixture) -> None:
    admin.status = 503  # Envoy's answer when its bootstrap has no admin runtime layer (no fast path rendered)
    caplog.set_level(logging.DEBUG, logger="extproc.envoy_runtime")
    assert keep_off_at_start(parse_config(config_text(admin_port=admin.port, envoy_extra=FAST))) == ()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_at_start_an_envoy_without_the_admin_layer_is_asked_nothing_it_would_log(admin, caplog) -> None:
    """Envoy logs a `runtime_modify` it cannot apply as an error: a GET of /runtime comes first."""
    admin.layers = ["static"]
    caplog.set_level(logging.DEBUG, logger="extproc.envoy_runtime")
    assert keep_off_at_start(parse_config(config_text(admin_port=admin.port, envoy_extra=FAST))) == ()
    assert admin.seen == []
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
