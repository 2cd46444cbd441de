"""Hot reload without a server: config sources (file, directory), the holder swap, the reloader."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from builders import body_msg, chat, chat_headers, config_text

from extproc.config import ConfigError, ConfigSource, load_config, parse_config
from extproc.handler import StreamHandler
from extproc.reload import Reloader, RuntimeHolder, pin_restart_only
from extproc.runtime import build_runtime
from extproc.server import ExternalProcessor
from extproc.telemetry.metrics import Metrics

ENV = {"QUORUM_TEST_LARGE_KEY": "k"}
CODING_TO_SMALL = ("modelRefs: [{model: demo-coder}]", "modelRefs: [{model: demo-small}]")


def compile_runtime(config, semantic=None):
    return build_runtime(config, environ=ENV, semantic=semantic)


def write(path: Path, text: str) -> None:
    """Replace the file the way editors and ConfigMap updates do (a rename), with a new mtime."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


async def routed_model(holder: RuntimeHolder, text: str) -> str:
    handler = StreamHandler(holder.runtime)
    replies = [r for m in (chat_headers(), body_msg(chat(text))) async for r in handler.handle(m)]
    return route_of(replies[-1])


def route_of(reply) -> str:
    mutation = reply.request_body.response.header_mutation
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}["x-quorum-model"]


def reloader_for(path: Path, metrics: Metrics | None = None) -> tuple[Reloader, RuntimeHolder]:
    snapshot = ConfigSource(path).read()
    holder = RuntimeHolder(compile_runtime(load_config(path)), snapshot.digest)
    return Reloader(ConfigSource(path), holder, metrics, compile_runtime, environ=ENV), holder


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


# ---------------------------------------------------------------- sources


def test_a_directory_merges_in_name_order(tmp_path):
    full = parse_config(config_text())
    text = config_text()
    head, _, routing = text.partition("routing:\n")
    (tmp_path / "10-base.yaml").write_text(head)
    (tmp_path / "20-routing.yaml").write_text("routing:\n" + routing)
    # a later file adds a decision (lists concatenate) and overrides a scalar
    (tmp_path / "30-extra.yaml").write_text(
        "server: {grace_period: 3s}\n"
        "routing:\n  decisions:\n    - {name: tickets, priority: 1, rules: {type: regex, name: ticket},"
        " modelRefs: [{model: demo-small}]}\n"
    )
    (tmp_path / ".30-extra.yaml.swp").write_text("not: [yaml")  # editor litter is ignored
    (tmp_path / "README.md").write_text("ignored")
    merged = load_config(tmp_path)
    assert [d.name for d in merged.routing.decisions] == [d.name for d in full.routing.decisions] + ["tickets"]
    assert merged.server.grace_period == 3.0
    assert merged.providers == full.providers


def test_a_yaml_error_names_the_file_of_a_directory(tmp_path):
    (tmp_path / "a.yaml").write_text(config_text())
    (tmp_path / "b.yaml").write_text("routing: [unclosed\n")
    with pytest.raises(ConfigError, match=r"b\.yaml"):
        load_config(tmp_path)


def test_an_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no \*\.yaml"):
        load_config(tmp_path)


def test_fingerprint_and_digest_follow_content(tmp_path):
    path = tmp_path / "q.yaml"
    write(path, config_text())
    source = ConfigSource(path)
    fp, digest = source.fingerprint(), source.read().digest
    write(path, config_text())  # same bytes, new file: the watcher looks, the digest says unchanged
    assert source.fingerprint() != fp
    assert source.read().digest == digest
    write(path, config_text().replace(*CODING_TO_SMALL))
    assert source.read().digest != digest


# ---------------------------------------------------------------- holder and pinning


async def test_a_stream_keeps_the_runtime_it_started_with():
    old = compile_runtime(parse_config(config_text()))
    new = compile_runtime(parse_config(config_text().replace(*CODING_TO_SMALL)))
    holder = RuntimeHolder(old)
    processor = ExternalProcessor(holder)

    async def messages():
        yield chat_headers()
        holder.swap(new, "new")  # a reload lands while this request is in flight
        yield body_msg(chat("python"))

    replies = [r async for r in processor.Process(messages(), None)]
    assert route_of(replies[-1]) == "demo-coder"  # in flight: the old routing
    replies = [r async for r in processor.Process(_aiter(chat_headers(), body_msg(chat("python"))), None)]
    assert route_of(replies[-1]) == "demo-small"  # the next stream: the new one
    assert holder.generation == 2


def test_restart_only_settings_keep_their_running_value():
    old = parse_config(config_text(grpc_port=5000, max_body=1000))
    new_text = config_text(grpc_port=6000, max_body=2000, metrics_port=7000)
    new = parse_config(new_text.replace("drain_delay: 0s", "drain_delay: 5s, route_header: x-other"))
    pinned, warnings = pin_restart_only(new, old)
    assert pinned.server.listen == old.server.listen
    assert pinned.server.max_body_bytes == 1000
    assert pinned.server.route_header == "x-quorum-model"  # Envoy still routes on the old one
    assert pinned.server.drain_delay == 5.0  # applies at the next stop
    assert pinned.observability == old.observability
    assert pinned.routing == new.routing
    assert len(warnings) == 4
    assert any("server.listen" in w and "6000" in w for w in warnings)
    assert pin_restart_only(new, new) == (new, [])


# ---------------------------------------------------------------- reloader


async def test_reload_swaps_and_counts(tmp_path):
    path = tmp_path / "q.yaml"
    write(path, config_text())
    metrics = Metrics()
    reloader, holder = reloader_for(path, metrics)
    assert await reloader.reload() == "unchanged"
    write(path, config_text().replace(*CODING_TO_SMALL))
    assert await reloader.reload() == "success"
    assert await routed_model(holder, "python") == "demo-small"
    assert sample(metrics, "quorum_config_generation") == 2
    assert sample(metrics, "quorum_config_info", hash=holder.digest, generation="2") == 1
    assert sample(metrics, "quorum_config_reloads_total", result="success") == 1
    assert sample(metrics, "quorum_config_reloads_total", result="unchanged") == 1


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (CODING_TO_SMALL[0], "not: [valid"),
        ("modelRefs: [{model: demo-coder}]", "modelRefs: [{model: nowhere}]"),
        ("api_key_env: QUORUM_TEST_LARGE_KEY", "api_key_env: QUORUM_TEST_UNSET_KEY"),
    ],
    ids=["yaml", "reference", "missing-key-variable"],
)
async def test_an_invalid_edit_keeps_the_running_config(tmp_path, caplog, edit, problem):
    path = tmp_path / "q.yaml"
    write(path, config_text())
    metrics = Metrics()
    reloader, holder = reloader_for(path, metrics)
    before = holder.runtime
    write(path, config_text().replace(edit, problem))
    with caplog.at_level(logging.ERROR, logger="quorum.reload"):
        assert await reloader.reload() == "failure"
    assert holder.runtime is before and holder.generation == 1
    assert await routed_model(holder, "python") == "demo-coder"
    assert sample(metrics, "quorum_config_reloads_total", result="failure") == 1
    assert sample(metrics, "quorum_config_last_reload_successful") == 0
    assert "still serving generation 1" in caplog.text
    assert any(word in caplog.text for word in ("YAML", "nowhere", "QUORUM_TEST_UNSET_KEY"))


async def test_an_edit_envoy_must_follow_is_a_warning(tmp_path, caplog):
    path = tmp_path / "q.yaml"
    write(path, config_text())
    reloader, holder = reloader_for(path)
    write(path, config_text().replace(*CODING_TO_SMALL))  # routing only: nothing for Envoy
    with caplog.at_level(logging.WARNING, logger="quorum.reload"):
        assert await reloader.reload() == "success"
    assert "Envoy bootstrap" not in caplog.text
    added = config_text().replace(
        "routing:\n", "    - {name: demo-new, base_url: 'http://127.0.0.1:9/v1'}\nrouting:\n", 1
    )
    write(path, added)
    with caplog.at_level(logging.WARNING, logger="quorum.reload"):
        assert await reloader.reload() == "success"
    assert "the Envoy bootstrap for this config differs" in caplog.text
    assert "demo-new" in holder.runtime.models  # applied on Quorum's side all the same


async def test_every_problem_of_a_rejected_edit_is_logged(tmp_path, caplog):
    path = tmp_path / "q.yaml"
    write(path, config_text())
    reloader, _ = reloader_for(path)
    broken = config_text().replace("{model: demo-coder}", "{model: nowhere}").replace("priority: 150", "prio: 150")
    write(path, broken)
    with caplog.at_level(logging.ERROR, logger="quorum.reload"):
        await reloader.reload()
    # as `quorum validate` reports them: a structural problem and a reference problem together
    assert "prio: unknown key" in caplog.text
    assert "unknown model 'nowhere'" in caplog.text


async def test_the_watcher_reloads_on_change_and_on_request(tmp_path):
    path = tmp_path / "q.yaml"
    write(path, config_text())
    metrics = Metrics()
    reloader, holder = reloader_for(path, metrics)
    task = asyncio.ensure_future(reloader.run(interval=0.02))
    try:
        await asyncio.sleep(0.05)
        write(path, config_text().replace(*CODING_TO_SMALL))
        await _until(lambda: holder.generation == 2)
        assert await routed_model(holder, "python") == "demo-small"
        reloader.request("SIGHUP")  # unchanged content: looked at, nothing swapped
        await _until(lambda: sample(metrics, "quorum_config_reloads_total", result="unchanged") == 1)
        assert holder.generation == 2
    finally:
        task.cancel()


async def test_the_poll_interval_comes_from_the_active_config(tmp_path):
    path = tmp_path / "q.yaml"
    fast = config_text().replace("drain_delay: 0s", "drain_delay: 0s, watch_interval: 20ms")
    write(path, fast)
    reloader, holder = reloader_for(path)
    task = asyncio.ensure_future(reloader.run())
    try:
        await asyncio.sleep(0.05)
        write(path, fast.replace(*CODING_TO_SMALL).replace("watch_interval: 20ms", "watch_interval: 0s"))
        await _until(lambda: holder.generation == 2)  # polled at 20 ms ...
        write(path, fast)
        await asyncio.sleep(0.3)
        assert holder.generation == 2  # ... and the new config turned polling off
    finally:
        task.cancel()


async def test_without_polling_only_a_request_reloads(tmp_path):
    path = tmp_path / "q.yaml"
    write(path, config_text())
    reloader, holder = reloader_for(path)
    task = asyncio.ensure_future(reloader.run(interval=0))
    try:
        await asyncio.sleep(0.05)
        write(path, config_text().replace(*CODING_TO_SMALL))
        await asyncio.sleep(0.2)
        assert holder.generation == 1
        reloader.request()
        await _until(lambda: holder.generation == 2)
    finally:
        task.cancel()


class StubEngine:
    """Unit vectors from a text's hash: enough for example phrases to be embedded at prepare."""

    dimensions = 8

    async def embed(self, texts):
        import numpy as np

        rows = np.array([[(hash(t) >> i) & 1 or 0.5 for i in range(8)] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


async def test_a_reload_reuses_the_embedding_engine_unless_embedding_changes(tmp_path, monkeypatch):
    import extproc.runtime

    engines: list[StubEngine] = []

    def make_engine(cfg, env):
        engines.append(StubEngine())
        return engines[-1]

    monkeypatch.setattr(extproc.runtime, "make_engine", make_engine)
    semantic = (
        config_text()
        .replace(
            "    header:  [",
            "    domain: [{name: law, examples: ['Is this contract valid?']}]\n    header:  [",
        )
        .replace("{type: keyword, name: code}]", "{type: keyword, name: code}, {type: domain, name: law}]")
    )
    path = tmp_path / "q.yaml"
    write(path, semantic)
    reloader, holder = reloader_for(path)
    assert len(engines) == 1
    write(path, semantic.replace(*CODING_TO_SMALL))
    assert await reloader.reload() == "success"
    assert len(engines) == 1 and holder.runtime.semantic.domain_engine is engines[0]  # reused
    write(path, semantic.replace("routing:\n", "routing:\n  embedding: {cache_size: 16}\n", 1))
    assert await reloader.reload() == "success"
    assert len(engines) == 2 and holder.runtime.semantic.domain_engine is engines[1]  # embedding changed: a new one


async def _aiter(*items):
    for item in items:
        yield item


async def _until(condition) -> None:
    """Poll a condition the reloader's task changes (it has no event to wait on), for up to 5 s."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_sighup_during_start_up_reloads_once_serving():
    from extproc.server import _Lifecycle

    requests = []

    class StubReloader:
        def request(self, reason: str = "SIGHUP") -> None:
            requests.append(reason)

    lifecycle = _Lifecycle()
    lifecycle._on_reload()  # the runtime is still being prepared: remembered, not fatal
    assert requests == []
    lifecycle.attach(StubReloader())
    assert requests == ["SIGHUP"]
