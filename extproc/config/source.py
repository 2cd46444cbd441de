"""Where a configuration comes from: one YAML file, or a directory of them merged in name order.

A directory holds `*.yaml` / `*.yml` files (not recursive; names starting with `.` are skipped,
so editors' swap files do not count). They are merged in lexical name order:
  - mappings merge key by key, recursively;
  - lists are concatenated (so models, signals and decisions can be split across files);
  - any other value set again by a later file replaces the earlier one.
An empty file counts as an empty mapping. The merged mapping is validated as one document.

`fingerprint()` is the cheap check a watcher polls (names, sizes and modification times);
`read()` returns the merged mapping and a SHA-256 of the bytes read, which is what identifies a
loaded configuration (the `hash` in metrics and logs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from extproc.config.base import ConfigError

SUFFIXES = (".yaml", ".yml")

Fingerprint = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The raw document read from a source, before schema validation."""

    raw: dict[str, Any]
    digest: str  # sha256 hex of the file contents, in merge order
    files: tuple[Path, ...]


class ConfigSource:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            return [self.path]
        return sorted(
            p for p in self.path.iterdir() if p.suffix in SUFFIXES and not p.name.startswith(".") and p.is_file()
        )

    def fingerprint(self) -> Fingerprint:
        """Changes whenever a file is added, removed, replaced or written (a few stat calls)."""
        out = []
        for p in self.files():
            try:
                st = p.stat()
            except FileNotFoundError:  # removed between listing and stat: the next poll sees it
                continue
            out.append((p.name, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def read(self) -> Snapshot:
        files = self.files()
        if self.path.is_dir() and not files:
            raise ConfigError([f"no *.yaml or *.yml file in the directory {self.path}"], str(self.path))
        digest = hashlib.sha256()
        merged: dict[str, Any] = {}
        for p in files:
            data = p.read_bytes()  # FileNotFoundError propagates: the caller reports the path
            digest.update(p.name.encode() + b"\0" + data + b"\0")
            merge(merged, _parse(data, p))
        return Snapshot(merged, digest.hexdigest(), tuple(files))


def _parse(data: bytes, path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(["the top level must be a mapping"], str(path))
    return raw


def merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Merge `other` into `into` (see the module docstring); returns `into`."""
    for key, value in other.items():
        current = into.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merge(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            into[key] = current + value
        else:
            into[key] = value
    return into
