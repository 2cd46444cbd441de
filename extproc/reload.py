"""Hot reload: read → validate → compile → prepare → swap, on a file change or SIGHUP.

The request path reads `RuntimeHolder.runtime` once per ext_proc stream and keeps that snapshot
for the whole request, so a swap is one attribute assignment and in-flight requests finish on the
runtime they started with. Everything else (reading, YAML, validation, compiling signals, loading
an embedding model) happens here, off the request path: a thread for the blocking parts, then
`prepare_runtime` on the loop as at start-up.

An invalid candidate changes nothing: every problem is logged, `quorum_config_reloads_total
{result="failure"}` grows, and the old runtime keeps serving. Settings bound at start-up (the
listen address, workers, the gRPC message limit, telemetry) keep their old values, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from extproc.config import Config, ConfigError, ConfigSource, Snapshot
from extproc.config.report import check_document
from extproc.envoy_runtime import take_off_fast_path
from extproc.policy.fastpath import leaving, reload_warnings
from extproc.runtime import Runtime, build_runtime, prepare_runtime
from extproc.telemetry.metrics import Metrics

log = logging.getLogger("quorum.reload")

# (section, key) bound when the process starts; None = the whole section.
RESTART_ONLY: tuple[tuple[str, str | None], ...] = (
    ("server", "listen"),
    ("server", "workers"),
    ("server", "max_body_bytes"),  # the gRPC message size limit is set when the server is created
    ("server", "log_level"),  # logging is configured once (and --log-level may override it)
    ("server", "route_header"),  # Envoy's routes match these: changing them alone would unroute everything
    ("server", "decision_header"),
    ("observability", None),  # tracer, metrics server and access log are built once
)


class RuntimeHolder:
    """The runtime new streams get. Swapped whole; never mutated."""

    __slots__ = ("digest", "generation", "runtime")

    def __init__(self, runtime: Runtime, digest: str = "") -> None:
        self.runtime = runtime
        self.digest = digest  # sha256 of the source files the runtime was built from
        self.generation = 1

    def swap(self, runtime: Runtime, digest: str) -> None:
        self.runtime = runtime
        self.digest = digest
        self.generation += 1


def pin_restart_only(new: Config, old: Config) -> tuple[Config, list[str]]:
    """`new` with the start-up-bound settings of `old`, and a warning for each that changed."""
    warnings = []
    updates: dict[str, Any] = {}
    for section, key in RESTART_ONLY:
        old_part = getattr(old, section)
        new_part = updates.get(section, getattr(new, section))
        if key is None:
            if new_part != old_part:
                warnings.append(f"{section}: changes need a restart; keeping the running settings")
                updates[section] = old_part
        elif (before := getattr(old_part, key)) != (after := getattr(new_part, key)):
            warnings.append(f"{section}.{key}: changing {before!r} to {after!r} needs a restart; keeping {before!r}")
            updates[section] = new_part.model_copy(update={key: before})
    return (new.model_copy(update=updates) if updates else new), warnings


def envoy_side_changed(new: Config, old: Config) -> bool:
    """Whether `quorum envoy-config` renders a different bootstrap for `new`: a model added, a
    backend moved, an `envoy` setting changed. Quorum cannot apply that side; Envoy must reload."""
    from extproc.bootstrap import render_yaml

    return bool(render_yaml(new, workers=old.server.workers) != render_yaml(old, workers=old.server.workers))


class Reloader:
    """Owns reloads for one process: one at a time, triggered by `request()` (SIGHUP) or by polling."""

    def __init__(
        self,
        source: ConfigSource,
        holder: RuntimeHolder,
        metrics: Metrics | None = None,
        compile_runtime: Callable[..., Runtime] = build_runtime,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        self.holder = holder
        self.metrics = metrics
        self.compile_runtime = compile_runtime
        self.environ = environ  # where api_key_env variables are looked up (default: os.environ)
        self._wake = asyncio.Event()
        self._reason = "watch"
        if metrics is not None:
            metrics.config_active(holder.digest, holder.generation)

    def request(self, reason: str = "SIGHUP") -> None:
        """Ask for a reload even if the files look unchanged (safe to call from a signal handler)."""
        self._reason = reason
        self._wake.set()

    async def run(self, interval: float | None = None) -> None:
        """Poll the source every `interval` seconds (default: the active config's
        `server.watch_interval`; never if 0) and serve `request()`s, until cancelled."""
        seen = await asyncio.to_thread(self.source.fingerprint)
        while True:
            every = self.holder.runtime.config.server.watch_interval if interval is None else interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=every or None)
            forced = self._wake.is_set()
            reason, self._reason = self._reason, "watch"
            self._wake.clear()
            current = await asyncio.to_thread(self.source.fingerprint)
            if forced or current != seen:
                seen = current
                await self.reload(reason if forced else "file changed")

    async def reload(self, reason: str = "SIGHUP") -> str:
        """One attempt; returns its result: success, failure or unchanged."""
        try:
            result = await self._attempt(reason)
        except ConfigError as err:
            log.error("config reload (%s) rejected; still serving generation %d:", reason, self.holder.generation)
            for line in str(err).splitlines():
                log.error("  %s", line.strip())
            result = "failure"
        except Exception:
            log.exception("config reload (%s) failed; still serving generation %d", reason, self.holder.generation)
            result = "failure"
        if self.metrics is not None:
            self.metrics.config_reloads.labels(result).inc()
            self.metrics.config_last_reload_success.set(0 if result == "failure" else 1)
        return result

    def _reusable_semantic(self, config: Config) -> Any:
        """The running embedding engine, when the new config embeds the same way: a reload then
        neither loads the model again nor holds two copies (cached embeddings stay valid too)."""
        old = self.holder.runtime
        semantic = old.semantic
        engines = (getattr(semantic, "engine", None), getattr(semantic, "domain_engine", None))
        if semantic is None or engines == (None, None) or old.config.routing.embedding != config.routing.embedding:
            return None
        return semantic

    async def _attempt(self, reason: str) -> str:
        try:
            snapshot: Snapshot = await asyncio.to_thread(self.source.read)
        except OSError as exc:
            raise ConfigError([f"cannot read: {exc}"], str(self.source)) from None
        if snapshot.digest == self.holder.digest:
            if reason != "file changed":
                log.info("config reload (%s): %s is unchanged", reason, self.source)
            return "unchanged"
        old = self.holder.runtime.config
        # The checks of `quorum validate`: every error of every stage at once, and its warnings.
        findings = await asyncio.to_thread(check_document, snapshot.raw, self.environ)
        if findings.errors or findings.config is None:
            raise ConfigError(findings.errors, str(self.source))
        config, warnings = pin_restart_only(findings.config, old)
        warnings = findings.warnings + warnings
        envoy_side = []
        if await asyncio.to_thread(envoy_side_changed, config, old):
            envoy_side.append(
                "the Envoy bootstrap for this config differs from the running one (models, backends or envoy.*): "
                "re-render it with `quorum envoy-config` and reload Envoy; until then new models have no route"
            )
        runtime = await asyncio.to_thread(self.compile_runtime, config, semantic=self._reusable_semantic(config))
        await prepare_runtime(runtime)
        self.holder.swap(runtime, snapshot.digest)
        # Policy on a model Envoy routes by itself: the running Envoy stops fast-pathing it, if reachable.
        taken_off, problem = await asyncio.to_thread(take_off_fast_path, old, leaving(old, config))
        if taken_off:
            log.info("config reload: %s taken off Envoy's fast path (now routed through Quorum)", ", ".join(taken_off))
        warnings += [problem] if problem else []
        warnings += reload_warnings(old, config, taken_off)
        for warning in warnings + envoy_side:
            log.warning("config reload: %s", warning)
        if self.metrics is not None:
            self.metrics.config_active(snapshot.digest, self.holder.generation)
        log.info(
            "config reloaded (%s): generation %d, hash %s, %d models, %d decisions",
            reason,
            self.holder.generation,
            snapshot.digest[:12],
            len(runtime.models),
            len(runtime.decisions),
        )
        return "success"
