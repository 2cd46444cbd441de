"""A do-nothing ext_proc server: the floor any Python ext_proc pays (grpc.aio on uvloop, like Quorum).

    python tests/bench/noop_extproc.py PORT

Every message gets the smallest answer Envoy accepts for its kind in Quorum's processing mode
(headers SEND, body FULL_DUPLEX_STREAMED, trailers SEND): headers continue, body chunks are echoed
back unchanged, trailers continue. No parsing, no routing; the route comes from Envoy's config.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc
import uvloop

from extproc import envoy
from extproc.pb import ep, ep_grpc

HEADERS = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
TRAILERS = ep.ProcessingResponse(request_trailers=ep.TrailersResponse())


class Noop(ep_grpc.ExternalProcessorServicer):
    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: object
    ) -> AsyncIterator[ep.ProcessingResponse]:
        async for message in request_iterator:
            which = message.WhichOneof("request")
            if which == "request_headers":
                yield HEADERS
            elif which == "request_body":
                yield envoy.streamed_body(message.request_body.body, message.request_body.end_of_stream)
            elif which == "request_trailers":
                yield TRAILERS


async def serve(port: int) -> None:
    server = grpc.aio.server()
    ep_grpc.add_ExternalProcessorServicer_to_server(Noop(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
