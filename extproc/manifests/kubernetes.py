"""The core Kubernetes objects: ConfigMap, Deployment, Services, PodDisruptionBudget, HorizontalPodAutoscaler."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from extproc.config import Config, split_host_port
from extproc.manifests.settings import Settings
from extproc.pb import SERVICE_NAME

CONFIG_DIR = "/etc/quorum"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"  # where the image's CMD and HEALTHCHECK look (Dockerfile)
KEYS_SECRET = "quorum-provider-keys"  # provider API keys; created by the operator, never committed
RUN_AS = 10001  # the image's USER
DRAIN_SECONDS = 5  # preStop: Endpoints and Envoy's health checks take the pod out before SIGTERM


def objects(config: Config, config_text: str, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    return {
        "configmap": [configmap(config_text, settings)],
        "deployment": [deployment(config, config_text, settings)],
        "service": services(config, settings),
        "poddisruptionbudget": [pod_disruption_budget(settings)],
        "horizontalpodautoscaler": [autoscaler(settings)],
    }


def kustomization(files: dict[str, str]) -> dict[str, Any]:
    resources = sorted(path.removeprefix("kubernetes/") for path in files if path.startswith("kubernetes/"))
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}


def configmap(config_text: str, settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": settings.metadata(f"{settings.name}-config"),
        "data": {"config.yaml": config_text},
    }


def _ports(config: Config) -> tuple[int, int | None]:
    grpc_port = split_host_port(config.server.listen)[1]
    metrics = config.observability.metrics
    return grpc_port, split_host_port(metrics.listen)[1] if metrics.enabled else None


def _probe(port: int, service: str, period: int, failures: int) -> dict[str, Any]:
    return {"grpc": {"port": port, "service": service}, "periodSeconds": period, "failureThreshold": failures}


def deployment(config: Config, config_text: str, settings: Settings) -> dict[str, Any]:
    grpc_port, metrics_port = _ports(config)
    ports = [{"name": "grpc", "containerPort": grpc_port, "protocol": "TCP"}]
    if metrics_port is not None:
        ports.append({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"})
    keys = sorted({m.api_key_env for m in config.providers.models if m.api_key_env})
    env = [{"name": k, "valueFrom": {"secretKeyRef": {"name": KEYS_SECRET, "key": k}}} for k in keys]
    # preStop, then Quorum's own drain delay (NOT_SERVING, still serving) and grace period, plus slack.
    grace = DRAIN_SECONDS + math.ceil(config.server.drain_delay + config.server.grace_period) + 5
    container: dict[str, Any] = {
        "name": "quorum",
        "image": settings.image,
        "args": ["serve", "--config", CONFIG_PATH],
        "ports": ports,
        "env": env,
        # Readiness follows the ext_proc service's health (NOT_SERVING while draining); liveness only
        # asks whether the server answers at all; the startup probe covers loading the embedding model.
        "startupProbe": _probe(grpc_port, SERVICE_NAME, period=2, failures=60),
        "readinessProbe": _probe(grpc_port, SERVICE_NAME, period=5, failures=1),
        "livenessProbe": _probe(grpc_port, "", period=10, failures=3),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if not env:
        del container["env"]
    config_hash = hashlib.sha256(config_text.encode()).hexdigest()
    annotations = {}
    if metrics_port is not None:
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": settings.metadata(),
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": settings.labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": settings.labels,
                    # A config edit rolls the pods (the config is read at start).
                    "annotations": {**annotations, "quorum/config-sha256": config_hash},
                },
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": settings.labels},
                        }
                    ],
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{settings.name}-config"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def services(config: Config, settings: Settings) -> list[dict[str, Any]]:
    """`quorum` for Istio and Envoy Gateway (they balance over the pods themselves); `quorum-headless`
    for a standalone Envoy, whose STRICT_DNS cluster resolves it to one endpoint per ready pod."""
    grpc_port, metrics_port = _ports(config)
    ports = [{"name": "grpc", "port": grpc_port, "targetPort": "grpc", "appProtocol": "grpc"}]
    if metrics_port is not None:
        ports.append({"name": "http-metrics", "port": metrics_port, "targetPort": "metrics"})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": settings.metadata(),
        "spec": {"selector": settings.labels, "ports": ports},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": settings.metadata(settings.headless_name),
        "spec": {"clusterIP": "None", "selector": settings.labels, "ports": ports[:1]},
    }
    return [service, headless]


def pod_disruption_budget(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": settings.metadata(),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": settings.labels}},
    }


_CPU_TARGET = {"type": "Utilization", "averageUtilization": 70}


def autoscaler(settings: Settings) -> dict[str, Any]:
    """CPU is what a Quorum replica runs out of (routing is CPU-bound; fusion waits on models)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": settings.metadata(),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": settings.name},
            "minReplicas": settings.replicas,
            "maxReplicas": settings.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": _CPU_TARGET}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }
