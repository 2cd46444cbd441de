"""Take models off a running Envoy's fast path, without rendering its config again.

Every fast-path route matches only while its runtime key (`quorum.fast_path.<model>`) is at its
default of 100 % (extproc/bootstrap/policy.py). When a reload puts policy on a fast-path model,
Quorum sets that key to 0 through Envoy's admin endpoint (`envoy.admin`, the address the rendered
bootstrap gives Envoy's admin), and from the next request on Envoy sends that model's requests
through Quorum. Only leaving works this way: a model that may take the fast path again needs its
route rendered from the new config, and a restarted Envoy starts from its rendered defaults.

At start (`keep_off_at_start`, once per server) Quorum does the same for every model its config
does not fast-path: an Envoy rendered from an earlier config, still running while Quorum restarts
with one that guards a model, stops fast-pathing it. A key for a model that Envoy never rendered a
fast route for is harmless.

This reaches an Envoy on Quorum's host (the standalone bootstrap, `quorum demo`); an Envoy elsewhere
(Istio or Envoy Gateway gateways, another host) keeps the route until its config is rendered and
applied again, which the reload's warning says.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from extproc.config import Config, split_host_port
from extproc.policy.fastpath import in_use, kept_on_quorum, runtime_key

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 1.0  # a reload must not hang on an Envoy that is not there
NO_ADMIN_LAYER = "No admin layer specified"  # Envoy's answer when its bootstrap has no fast path at all


def admin_url(config: Config) -> str:
    host, port = split_host_port(config.envoy.admin)
    if host in ("", "0.0.0.0", "::"):  # a wildcard listen address: reach it on loopback
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def renders_fast_path(config: Config) -> bool | None:
    """Whether the Envoy at `config.envoy.admin` has the admin runtime layer that only a rendered fast
    path adds (None: not reachable). Asked with a GET, which Envoy does not log, rather than a
    `runtime_modify` that an Envoy without the layer logs as an error."""
    try:
        with urllib.request.urlopen(f"{admin_url(config)}/runtime", timeout=TIMEOUT_SECONDS) as resp:
            layers = json.loads(resp.read()).get("layers", [])
    except (OSError, ValueError, AttributeError):
        return None
    return "admin" in layers


def take_off_fast_path(config: Config, models: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """Set each model's runtime key to 0 on the Envoy at `config.envoy.admin`.

    Returns the models taken off and, when that failed, why (empty when it worked)."""
    if not models:
        return (), ""
    query = urllib.parse.urlencode({runtime_key(name): "0" for name in models})
    url = f"{admin_url(config)}/runtime_modify?{query}"
    admin = f"Envoy's admin at {config.envoy.admin}"
    if renders_fast_path(config) is False:  # found without a runtime_modify that Envoy would log as an error
        return (), f"{admin} has no admin runtime layer ({NO_ADMIN_LAYER}) to take models off the fast path"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=TIMEOUT_SECONDS):
            pass
    except urllib.error.HTTPError as exc:  # e.g. an Envoy rendered without the runtime admin layer
        answer = exc.read(200).decode(errors="replace").strip()
        return (), f"{admin} answered {exc.code} ({answer}) to taking models off the fast path"
    except (OSError, ValueError) as exc:
        return (), f"{admin} is not reachable from Quorum to take models off the fast path ({exc})"
    return tuple(models), ""


def keep_off_at_start(config: Config) -> tuple[str, ...]:
    """Take every model `config` keeps on Quorum off the fast path of the running Envoy, if any.

    Best effort, logged: an Envoy rendered without any fast path (no admin runtime layer) needs
    nothing; an unreachable admin is a warning when this config uses the fast path (as at reload),
    and only noted otherwise (a mesh gateway's admin is never reachable from Quorum's pod)."""
    taken_off, problem = take_off_fast_path(config, kept_on_quorum(config))
    if taken_off:
        log.info("start: Envoy's fast path is off for %s (routed through Quorum)", ", ".join(taken_off))
    elif NO_ADMIN_LAYER in problem:
        log.debug("start: the Envoy at %s renders no fast path", config.envoy.admin)
    elif problem:
        level = logging.WARNING if in_use(config) else logging.INFO
        log.log(
            level,
            "start: %s; an Envoy rendered from an earlier config may still route models this config keeps on "
            "Quorum without it: run `quorum envoy-config` (or `quorum deploy-manifests`) and reload Envoy",
            problem,
        )
    return taken_off
