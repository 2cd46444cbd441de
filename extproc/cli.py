"""`quorum`: serve, validate a config, render the Envoy bootstrap, run a fake model backend."""

from __future__ import annotations

import argparse
import logging
import sys

from extproc.config import ConfigError, load_config


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _cmd_serve(args: argparse.Namespace) -> int:
    from extproc.runtime import build_runtime
    from extproc.server import serve

    config = load_config(args.config)
    _configure_logging(args.log_level or config.server.log_level)
    build_runtime(config)  # fail now, with the config error, rather than in every worker
    return serve(config, args.workers or config.server.workers)


def _cmd_validate(args: argparse.Namespace) -> int:
    from extproc.policy.fastpath import describe

    config = load_config(args.config)
    print(f"{args.config}: ok ({len(config.providers.models)} models, {len(config.routing.decisions)} decisions)")
    for line in describe(config):
        print(line)
    return 0


def _cmd_envoy_config(args: argparse.Namespace) -> int:
    from extproc.bootstrap import render_yaml

    text = render_yaml(load_config(args.config), workers=args.workers)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_fake_backend(args: argparse.Namespace) -> int:
    from extproc.dev import fake_backend

    _configure_logging("info")
    return fake_backend.run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    import signal
    import tempfile
    import time
    from pathlib import Path

    from extproc.dev.stack import Stack

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stop the children on SIGTERM as on Ctrl-C
    workdir = Path(tempfile.mkdtemp(prefix="quorum-demo-"))
    stack = Stack(Path(args.config), workdir)
    print(f"starting fake backends, quorum serve and Envoy (logs in {workdir}) ...", flush=True)
    with stack:
        url = stack.envoy_url
        print(DEMO_HELP.format(url=url), flush=True)
        try:
            while all(p.poll() is None for _, p in stack.processes):
                time.sleep(0.5)
            print("a process of the demo exited; stopping (see the logs)", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping ...")
    return 0


DEMO_HELP = """
Quorum demo is up. Envoy listens on {url}; Quorum routes every request.

  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "quorum/auto", "messages": [{{"role": "user", "content": "fix my python stack trace"}}]}}' -i

  curl -s {url}/v1/models

  python - <<'PY'
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="unused")
  reply = client.chat.completions.with_raw_response.create(
      model="quorum/auto", messages=[{{"role": "user", "content": "why does my python code fail?"}}])
  print(reply.headers["x-quorum-model"], reply.headers["x-quorum-decision"], reply.parse().choices[0].message.content)
  PY

Press Ctrl-C to stop everything.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quorum", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the ext_proc gRPC server")
    serve.add_argument("--config", "-c", required=True)
    serve.add_argument("--workers", type=int, help="processes on consecutive ports (default: server.workers)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_cmd_serve)

    validate = sub.add_parser("validate", help="check a config file and exit non-zero on problems")
    validate.add_argument("config")
    validate.set_defaults(func=_cmd_validate)

    envoy = sub.add_parser("envoy-config", help="render an Envoy bootstrap for a config")
    envoy.add_argument("--config", "-c", required=True)
    envoy.add_argument("--workers", type=int, help="ext_proc endpoints to list (default: server.workers)")
    envoy.add_argument("--output", "-o", help="write here instead of stdout")
    envoy.set_defaults(func=_cmd_envoy_config)

    demo = sub.add_parser("demo", help="start fake backends, quorum serve and Envoy together (make run)")
    demo.add_argument("--config", "-c", default="config/demo.yaml")
    demo.set_defaults(func=_cmd_demo)

    fake = sub.add_parser("fake-backend", help="run a fake OpenAI-compatible model backend")
    from extproc.dev import add_arguments

    add_arguments(fake)
    fake.set_defaults(func=_cmd_fake_backend)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
