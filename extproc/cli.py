"""`quorum`: serve, validate a config, render the Envoy bootstrap, run a fake model backend."""

from __future__ import annotations

import argparse
import logging
import sys

from extproc import __version__
from extproc.config import ConfigError, ConfigSource, load_config, validate_document
from extproc.ports import StartupError


def _configure_logging(level: str) -> None:
    from extproc.telemetry.setup import configure_logging

    configure_logging(level)


def _cmd_serve(args: argparse.Namespace) -> int:
    from extproc.config.warnings import config_warnings
    from extproc.cpu_share import available_cpus, budget_warnings
    from extproc.runtime import build_runtime
    from extproc.server import serve

    snapshot = ConfigSource(args.config).read()
    config = validate_document(snapshot.raw, args.config)
    if args.log_level:  # the workers of --workers N configure their own logging from this config
        config = config.model_copy(update={"server": config.server.model_copy(update={"log_level": args.log_level})})
    _configure_logging(config.server.log_level)
    workers = args.workers or config.server.workers
    for warning in [*config_warnings(config), *budget_warnings(config, workers, available_cpus())]:
        logging.getLogger("quorum").warning("%s", warning)
    try:
        build_runtime(config)  # fail now, with the config error, rather than in every worker
    except ConfigError as err:
        raise ConfigError(err.problems, args.config) from None
    return serve(config, workers, source=args.config, digest=snapshot.digest)


def _cmd_validate(args: argparse.Namespace) -> int:
    """Every error and warning at once, as `path: problem`; exit 2 on errors, like `serve` refuses."""
    from extproc.config.report import check_document
    from extproc.policy.fastpath import describe

    findings = check_document(ConfigSource(args.config).read().raw)
    if findings.errors:
        print(f"{args.config}: {len(findings.errors)} error(s)", file=sys.stderr)
        for error in findings.errors:
            print(f"  {error}", file=sys.stderr)
    else:
        config = findings.config
        assert config is not None
        print(f"{args.config}: ok ({len(config.providers.models)} models, {len(config.routing.decisions)} decisions)")
    for warning in findings.warnings:
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    if findings.config is not None:
        for line in describe(findings.config):
            print(line)
    return 2 if findings.errors else 0


def _cmd_signals_explain(args: argparse.Namespace) -> int:
    import os

    from extproc.signals.explain import run

    print(run(load_config(args.config), os.environ))
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


def _cmd_deploy_manifests(args: argparse.Namespace) -> int:
    from pathlib import Path

    from extproc.manifests import Settings, write_manifests

    settings = Settings(namespace=args.namespace, image=args.image, replicas=args.replicas)
    try:
        written = write_manifests(Path(args.config), Path(args.output), settings)
    except OSError as exc:  # a config that cannot be read, an output that cannot be written: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _cmd_healthcheck(args: argparse.Namespace) -> int:
    from extproc.healthcheck import check, probe_address

    address = args.address or probe_address(load_config(args.config).server.listen)
    status = check(address, timeout=args.timeout)
    print(f"{address}: {status}")
    return 0 if status == "SERVING" else 1


def _cmd_fake_backend(args: argparse.Namespace) -> int:
    from extproc.dev import fake_backend

    _configure_logging("info")
    return fake_backend.run(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from extproc.eval.command import main as run_eval

    return run_eval(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    import signal
    import tempfile
    import time
    from pathlib import Path

    from extproc.dev.stack import Stack, StartFailed

    def ignore_signals() -> None:
        """While stopping: a second Ctrl-C or SIGTERM must not cut the stop short."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def interrupt(signum: int, frame: object) -> None:
        ignore_signals()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stop the children on SIGTERM as on Ctrl-C
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGHUP, lambda signum, frame: stack.signal("quorum", signal.SIGHUP))  # reload, not exit
    workdir = Path(tempfile.mkdtemp(prefix="quorum-demo-"))
    if args.real:
        from extproc.dev.real_servers import unavailable_reason

        reason = unavailable_reason()
        if reason:
            print(f"error: real models are not installed: {reason}", file=sys.stderr)
            return 1
    stack = Stack(Path(args.config), workdir, real_models=args.real)
    try:
        backends = "llama.cpp servers" if args.real else "fake backends"
        print(f"starting {backends}, quorum serve and Envoy (logs in {workdir}) ...", flush=True)
        try:
            stack.start(timeout=300.0 if args.real else 30.0)
        except StartFailed as exc:
            print(f"error: quorum demo did not start: {exc}", file=sys.stderr)
            return 1
        print(DEMO_HELP.format(url=stack.envoy_url, config=args.config), flush=True)
        while True:
            try:
                stack.check_alive()
            except StartFailed as exc:
                print(f"error: quorum demo stopped: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        ignore_signals()
        stack.stop()


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

Edit {config} and Quorum reloads it within a second (or send SIGHUP); an invalid edit is
logged and the running config stays. Press Ctrl-C to stop everything.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quorum", description=__doc__)
    parser.add_argument("--version", action="version", version=f"quorum {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the ext_proc gRPC server")
    serve.add_argument("--config", "-c", required=True, help="a YAML file, or a directory of them (merged)")
    serve.add_argument("--workers", type=int, help="processes on consecutive ports (default: server.workers)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_cmd_serve)

    validate = sub.add_parser("validate", help="check a config file and exit non-zero on problems")
    validate.add_argument("config")
    validate.set_defaults(func=_cmd_validate)

    signals = sub.add_parser("signals", help="inspect signals").add_subparsers(dest="signals_command", required=True)
    explain = signals.add_parser("explain", help="show the domain classifier's calibration and confused examples")
    explain.add_argument("config")
    explain.set_defaults(func=_cmd_signals_explain)

    envoy = sub.add_parser("envoy-config", help="render an Envoy bootstrap for a config")
    envoy.add_argument("--config", "-c", required=True)
    envoy.add_argument(
        "--workers", type=int, help="worker ports to list (default: server.workers; envoy.extproc_endpoints wins)"
    )
    envoy.add_argument("--output", "-o", help="write here instead of stdout")
    envoy.set_defaults(func=_cmd_envoy_config)

    deploy = sub.add_parser("deploy-manifests", help="generate Kubernetes, Istio and Envoy Gateway files")
    from extproc.manifests import Settings

    deploy.add_argument("--config", "-c", required=True)
    deploy.add_argument("--output", "-o", required=True, help="directory (deploy/)")
    deploy.add_argument("--namespace", default=Settings.namespace)
    deploy.add_argument("--image", default=Settings.image)
    deploy.add_argument("--replicas", type=int, default=Settings.replicas)
    deploy.set_defaults(func=_cmd_deploy_manifests)

    probe = sub.add_parser("healthcheck", help="exit 0 if a running Quorum reports SERVING (for Docker HEALTHCHECK)")
    target = probe.add_mutually_exclusive_group(required=True)
    target.add_argument("--config", "-c", help="probe the server.listen address of this config")
    target.add_argument("--address", help="host:port to probe")
    probe.add_argument("--timeout", type=float, default=2.0)
    probe.set_defaults(func=_cmd_healthcheck)

    demo = sub.add_parser("demo", help="start fake backends, quorum serve and Envoy together (make run)")
    demo.add_argument("--config", "-c", default="config/demo.yaml")
    demo.add_argument("--real", action="store_true", help="llama.cpp servers instead of fakes (make run-real)")
    demo.set_defaults(func=_cmd_demo)

    evaluate = sub.add_parser("eval", help="score models and Quorum aliases on a JSONL dataset through the gateway")
    from extproc.eval.command import add_arguments as add_eval_arguments

    add_eval_arguments(evaluate)
    evaluate.set_defaults(func=_cmd_eval)

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
        one = len(err.problems) == 1  # one problem fits on one line
        print(f"error: {err.source}: {err.problems[0]}" if one else f"error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StartupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the server installed its own handler: no traceback
        return 130


if __name__ == "__main__":
    sys.exit(main())
