"""Markdown report helpers shared by the benchmark scripts.

`docs/benchmarks.md` is assembled from independent sections, one per benchmark script, each
between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` markers. A script rewrites only
its own section with `write_section()`; everything else in the file is kept as it is, so routing,
fusion and semantic-signal benchmarks can be run (and re-run) separately.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

DOC_TITLE = "# Benchmarks\n"
DOC_INTRO = (
    "Measured numbers for Quorum, written by the scripts in `tests/bench/`. Each section is generated; "
    "edit the scripts, not the text between the markers, and re-run them to refresh a section.\n"
)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def write_section(path: str | Path, name: str, body: str) -> None:
    """Replace (or append) section `name` of the Markdown file at `path`, keeping the rest."""
    path = Path(path)
    start, end = markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"{DOC_TITLE}\n{DOC_INTRO}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text, found = pattern.subn(lambda _m: block, text, count=1)
    if not found:
        text = text.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n", encoding="utf-8")


def publish(report: str, output: str | None, section: str) -> None:
    """Print the report and, with --output, replace its section of that Markdown file."""
    print(report)
    if output:
        write_section(output, section, report)
        print(f"wrote the `{section}` section of {output}", file=sys.stderr)


def scan_logs(workdir: Path, processes: str) -> list[str]:
    """Report lines for the error-looking lines in the logs under `workdir`; `processes` says whose logs."""
    notes = []
    for log in sorted(workdir.rglob("*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        bad = [line for line in lines if any(m in line for m in ("ERROR", "Traceback", "[error]", "[critical]"))]
        if bad:
            where = log.relative_to(workdir).as_posix()
            notes.append(f"- **{where}: {len(bad)} error line(s)**, first: `{bad[0][:200]}`")
    return notes or [f"- No error lines in the logs of {processes}."]


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A Markdown table; `align` is one character per column, `l` or `r` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- environment


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def envoy_version(envoy: str) -> str:
    try:
        done = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            return line.strip().removeprefix(envoy).strip()
    return "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    """The command that produced the report: `make bench` when run from make, and the full argv."""
    argv = shlex.join([os.path.relpath(sys.executable) if sys.executable else "python", *sys.argv])
    return f"`make bench` → `{argv}`" if os.environ.get("MAKELEVEL") else f"`{argv}`"


def environment_lines(envoy: str, extra: dict[str, str] | None = None) -> str:
    """The header every benchmark section starts with: when, where, with what, and how."""
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    rows = [
        ("date", now),
        ("machine", f"{os.cpu_count()} CPUs (nproc), {cpu_model()}, {memory_gib()} RAM, Linux {platform.release()}"),
        ("Envoy", envoy_version(envoy)),
        ("Python", platform.python_version()),
        ("grpcio", package_version("grpcio")),
        ("protobuf", package_version("protobuf")),
        ("uvloop", package_version("uvloop")),
        ("aiohttp (fake backend)", package_version("aiohttp")),
        *(extra or {}).items(),
        ("command", command_line()),
    ]
    return table(["environment", ""], rows, align="ll")
