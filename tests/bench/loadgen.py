"""Load generation for the benchmarks: wrk (installed on demand), request bodies, CPU accounting.

Reusable by every benchmark script in this folder: `ensure_wrk()` finds or installs wrk,
`chat_body()` builds a chat request of an exact size, `run_wrk()` drives one case with
`post.lua` and returns a `WrkResult`, and `cpu_seconds()` reads a process's CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

POST_LUA = Path(__file__).with_name("post.lua")
CLK_TCK = os.sysconf("SC_CLK_TCK")

SYSTEM_PROMPT = "You are a helpful assistant. Answer concisely and cite the lines you rely on."
FILLER = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi "
)


class BenchError(RuntimeError):
    """A benchmark cannot run or produced unusable results; the message says why."""


def measured(measure: Callable[[], T], workdir: Path) -> T | int:
    """`measure()`, or the exit code after saying where the logs are (130 on Ctrl-C, 1 on a failure)."""
    try:
        return measure()
    except KeyboardInterrupt:
        print(f"\ninterrupted; every process was stopped (logs in {workdir})", file=sys.stderr)
        return 130
    except (BenchError, RuntimeError, TimeoutError, OSError) as err:
        print(f"error: {err}\nlogs are in {workdir}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    """Path of wrk; install the Debian package when it is missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError("wrk is not installed. Install it first: `sudo apt-get install -y wrk` (Debian/Ubuntu).")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    print("wrk not found; installing it with apt-get ...", file=sys.stderr, flush=True)
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # The package lists may be missing or stale on a fresh machine: refresh once and retry.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(
                "could not install wrk with apt-get (`apt-get install -y wrk` failed):\n" + done.stderr[-2000:]
            )
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get reported success but `wrk` is still not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].split(" Copyright")[0].strip() if lines else "unknown"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    bytes_read: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int  # responses with status >= 400 (nothing here answers 1xx or 3xx)
    socket_errors: int  # connect + read + write errors and timeouts
    wrk_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_rps(self) -> float:
        """Requests per second that got a 2xx answer."""
        return max(0, self.requests - self.non_2xx) / self.duration_s if self.duration_s else 0.0


def parse_wrk_output(text: str) -> WrkResult:
    for line in text.splitlines():
        if line.startswith("BENCHCSV,"):
            f = [float(x) for x in line.split(",")[1:]]
            us = 1000.0
            return WrkResult(
                requests=int(f[0]),
                duration_s=f[1] / 1e6,
                bytes_read=int(f[2]),
                p50_ms=f[3] / us,
                p90_ms=f[4] / us,
                p99_ms=f[5] / us,
                p999_ms=f[6] / us,
                mean_ms=f[7] / us,
                max_ms=f[8] / us,
                non_2xx=int(f[9]),
                socket_errors=int(f[10] + f[11] + f[12] + f[13]),
            )
    raise BenchError("wrk printed no BENCHCSV line; its output was:\n" + text[-3000:])


def run_wrk(
    wrk: str,
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration_s: float,
    threads: int | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """One closed-loop wrk run; the wrk process is killed if we are interrupted."""
    threads = threads or (1 if connections == 1 else 2)
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(POST_LUA),
        url,
        "--",
        str(body_file),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=duration_s + timeout_s + 30)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        raise
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}: {' '.join(argv)}\n{out[-3000:]}")
    result = parse_wrk_output(out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(**{**result.__dict__, "wrk_cpu_s": cpu})


# ---------------------------------------------------------------- bodies


def chat_body(model: str, size: int, prompt: str) -> bytes:
    """A compact chat request JSON of exactly `size` bytes: system + user message, padded user text.

    Serialised like orjson (compact, keys in insertion order), so a router that rewrites only
    `model` to a name of the same length sends the upstream the very same bytes.
    """

    def encode(pad: str) -> bytes:
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt + pad},
            ],
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    missing = size - len(encode(""))
    if missing < 0:
        raise BenchError(f"a {size} B body cannot hold the prompt")
    repeats = missing // len(FILLER) + 1
    data = encode((FILLER * repeats)[:missing])
    assert len(data) == size, (len(data), size)
    return data


# ---------------------------------------------------------------- CPU


def pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of a process on `cpus` (threads it starts later inherit the mask)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def add_layout_option(parser: argparse.ArgumentParser) -> None:
    """`--layout dedicated|shared`, as every benchmark that pins processes takes it."""
    parser.add_argument(
        "--layout",
        choices=("dedicated", "shared"),
        default="dedicated",
        help="dedicated: Quorum pinned to CPU 1, everything else to CPU 0; shared: no pinning (default: %(default)s)",
    )


def check_layout(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.layout == "dedicated" and (os.cpu_count() or 1) < 2:
        parser.error("--layout dedicated needs at least 2 CPUs; use --layout shared")


def dedicate_cpu(processes: dict[str, int], ext_proc: str = "quorum") -> None:
    """The `dedicated` layout: Quorum's processes on CPU 1, everything else (and this script, so the
    wrk it starts) on CPU 0. `processes` maps names to pids; names starting with `ext_proc` get CPU 1."""
    pin(os.getpid(), {0})
    for name, pid in processes.items():
        pin(pid, {1} if name.startswith(ext_proc) else {0})


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, summed over all CPUs."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK
