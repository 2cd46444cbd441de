"""Development-only tools: the fake OpenAI backend and the local stack (Envoy + Quorum + fakes).

Nothing under `extproc/dev` is imported by the serving path; it needs the `dev` extra (aiohttp).
The fake backend's command-line arguments live here so `quorum --help` works without it.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="listen port (0 = ephemeral)")
    parser.add_argument("--model", required=True, help="model name this backend serves")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--stream-delay-ms", type=float, default=0.0, help="pause between streamed chunks")
    parser.add_argument("--script", help="JSON file mapping user-message substrings to replies")
    parser.add_argument(
        "--quirk",
        action="append",
        help="behave like a real server: drop_system, no_stream_usage, no_json_schema, max_tokens_only, "
        "uuid_request_id, or llama_cpp for all of them (repeatable)",
    )
