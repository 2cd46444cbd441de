"""`quorum healthcheck`: ask a running Quorum's gRPC health service whether it is SERVING.

For probes that cannot speak gRPC themselves (Docker's HEALTHCHECK); Kubernetes and Envoy call the
health service directly. Exit 0 when SERVING, 1 otherwise (NOT_SERVING, unreachable, timed out).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.config import split_host_port
from extproc.pb import SERVICE_NAME

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_address(listen: str) -> str:
    """Where to reach a server that listens on `listen`: a wildcard address becomes loopback."""
    host, port = split_host_port(listen)
    host = _WILDCARDS.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check(address: str, service: str = SERVICE_NAME, timeout: float = 2.0) -> str:
    """The health status name the server reports for `service`, or UNREACHABLE."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            return "UNKNOWN_SERVICE" if err.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
