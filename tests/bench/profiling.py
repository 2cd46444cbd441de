"""`run.py --profile DIR`: sample the Quorum process with py-spy while wrk loads it.

py-spy is not a project dependency: `.venv/bin/pip install py-spy`. Each profile is a collapsed-stack
text file (`py-spy record --format raw`; open it with speedscope.app or feed it to flamegraph.pl),
plus a summary of the hottest Python lines. Sampling slows the target, so profiles are taken after
the measured cases and never feed the report's numbers.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from loadgen import POST_LUA, BenchError


def find_py_spy() -> str:
    for candidate in (str(Path(sys.executable).with_name("py-spy")), shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return candidate
    raise BenchError("--profile needs py-spy: `.venv/bin/pip install py-spy`")


def profile(
    wrk: str, url: str, body: Path, connections: int, pid: int, out: Path, seconds: int, warmup: int = 1
) -> Path:
    """Load `url` with wrk and record `pid` for `seconds`; return the collapsed-stack file."""
    py_spy = find_py_spy()
    threads = 1 if connections == 1 else 2
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds + warmup + 1}s", "-s", str(POST_LUA), url]
    load = subprocess.Popen([*argv, "--", str(body)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        record = [py_spy, "record", "--format", "raw", "--rate", "200", "-d", str(seconds), "-o", str(out)]
        done = subprocess.run([*record, "--pid", str(pid)], capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            raise BenchError(f"py-spy failed ({done.returncode}): {done.stderr[-1000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            load.kill()
        load.wait()
    return out


def summarize(collapsed: Path, top: int = 15) -> str:
    """The hottest frames by own time and, for Quorum's code, by inclusive time."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            if "extproc/" in frame:
                inclusive[frame] += n
    if not total:
        return f"{collapsed}: no samples\n"
    lines = [
        f"{collapsed.name}: {total} samples",
        "  own time (Runner.run and Thread.run own time is native code: gRPC C-core, uvloop, syscalls):",
    ]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("  Quorum code, inclusive (below the entry point frames every sample shares):")
    root = max(inclusive.values(), default=0)
    ranked = [(frame, n) for frame, n in inclusive.most_common() if n < root][:top]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in ranked]
    return "\n".join(lines) + "\n"
