"""Where the manifests put Quorum: names, namespace, image, replicas, and the gateways to attach to."""

from __future__ import annotations

from dataclasses import dataclass

from extproc import __version__


@dataclass(frozen=True)
class Settings:
    name: str = "quorum"
    namespace: str = "quorum"
    image: str = f"quorum:{__version__}"
    replicas: int = 2
    max_replicas: int = 10
    # Istio: the ingress gateway's namespace and the labels of its pods.
    istio_namespace: str = "istio-system"
    istio_gateway_labels: tuple[tuple[str, str], ...] = (("istio", "ingressgateway"),)
    istio_gateway: str = "llm-gateway"  # the Istio Gateway resource (in istio_namespace) the routes bind to
    # Envoy Gateway: the Gateway the policy attaches to.
    gateway_name: str = "eg"
    gateway_namespace: str = "envoy-gateway-system"
    gateway_listener: str = "http"  # the Gateway's listener (plain HTTP) the fast-path patch applies to

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/component": "ext-proc"}

    @property
    def service_host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    @property
    def headless_name(self) -> str:
        return f"{self.name}-headless"

    def metadata(self, name: str | None = None, namespace: str | None = None) -> dict[str, object]:
        return {"name": name or self.name, "namespace": namespace or self.namespace, "labels": self.labels}
