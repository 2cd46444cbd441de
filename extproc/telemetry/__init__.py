"""Traces, metrics, access logs and usage accounting: everything an operator sees of a request.

`Telemetry` is built once per process from the config; each ext_proc stream gets a
`RequestRecorder` (recorder.py) that collects facts as they arrive and emits them exactly once.
"""

from extproc.telemetry.setup import Telemetry, build_telemetry

__all__ = ["Telemetry", "build_telemetry"]
