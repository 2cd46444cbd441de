"""Every key the configuration schema accepts, as documented paths (`providers.models[].name`).

docs/configuration.md's key index is checked against this list by a test, so a key added to the
schema without a line of documentation fails the build. A model class met again under another key
(a rule's `conditions`, the confidence gate's `escalate`) is listed once, at its first path.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from extproc.config.base import _duration
from extproc.config.schema import Config


@dataclass(frozen=True)
class Key:
    path: str
    default: str  # as the documentation shows it: `required`, `none`, or the value
    same_as: str | None = None  # the path where this key's own keys are listed


def schema_keys(root: type[BaseModel] = Config) -> list[Key]:
    out: list[Key] = []
    _walk(root, "", out, {root: ""})
    return out


def _walk(model: type[BaseModel], prefix: str, out: list[Key], first: dict[type[BaseModel], str]) -> None:
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}" if prefix else (info.alias or name)
        inner = path + _container_suffix(info.annotation)
        subs = _models_in(info.annotation)
        seen = next((first[m] for m in subs if m in first), None)
        out.append(Key(path, _default(info), same_as=seen))
        for sub in subs:
            if sub not in first:
                first[sub] = inner
                _walk(sub, inner, out, first)


def _container_suffix(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is list:
        return "[]"
    if origin is dict:
        return ".<name>"
    if isinstance(annotation, types.UnionType) or origin is typing.Union or origin is typing.Annotated:
        return next((s for a in typing.get_args(annotation) if (s := _container_suffix(a))), "")
    return ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict:
        args = args[1:]
    return [m for a in args for m in _models_in(a)]


def _default(info: FieldInfo) -> str:
    """The default as the documentation writes it (YAML spelling, durations with a unit)."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True) if info.default is PydanticUndefined else info.default
    if any(getattr(m, "func", None) is _duration for m in info.metadata) and isinstance(value, float):
        return f"{value:g}s"
    return _yaml(value)


def _yaml(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "{}"  # its keys are listed with their own defaults
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)
