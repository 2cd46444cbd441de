"""Envoy's runtime layers: flags Quorum needs set in every Envoy, and the admin layer of the fast path.

`ext_proc_graceful_grpc_close`: without it Envoy resets (RST_STREAM) every ext_proc stream right after
half-closing it instead of waiting for the server's status; some of those calls never complete in
grpcio's server, whose native memory then grows for good (measured: Quorum's RSS grew 1.2 MiB per
10,000 routed requests, flat with the flag; a bare grpc.aio server shows the same growth when its
clients cancel, on every grpcio from 1.66 to 1.85). Envoy then waits up to 1 s
(`envoy.filters.http.ext_proc.remote_close_timeout_milliseconds`) for Quorum to close its side, which
Quorum does as soon as Envoy has half-closed; the request itself does not wait for it.
"""

from __future__ import annotations

from typing import Any

from extproc.policy.fastpath import FastPathPlan

GRACEFUL_EXTPROC_CLOSE = "envoy.reloadable_features.ext_proc_graceful_grpc_close"
STATIC_FLAGS: dict[str, Any] = {GRACEFUL_EXTPROC_CLOSE: True}


def layered_runtime(plan: FastPathPlan) -> dict[str, Any]:
    """The static flags, plus an admin layer when models are on the fast path, so that a running Envoy
    can take one off it (extproc/envoy_runtime.py)."""
    layers: list[dict[str, Any]] = [{"name": "static", "static_layer": dict(STATIC_FLAGS)}]
    if plan.models:
        layers.append({"name": "admin", "admin_layer": {}})
    return {"layered_runtime": {"layers": layers}}
