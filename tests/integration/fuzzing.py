"""Ways the fuzz tests damage an encoded JSON body (hypothesis strategies draw which)."""

from __future__ import annotations

from hypothesis import strategies as st

DAMAGE = ["none", "none", "none", "truncate", "bad_utf8", "oversize", "wrong_type"]


def damage(draw: st.DrawFn, kind: str, encoded: bytes, pad: int, fields: list[str], values: list[bytes]) -> bytes:
    """`encoded` damaged the `kind` way: cut short, broken UTF-8, padded past `pad` bytes, or with one of
    `fields` appended with a wrong-typed value from `values` (a later duplicate key wins in orjson)."""
    if kind == "truncate":
        return encoded[: draw(st.integers(1, max(1, len(encoded) - 1)))]
    if kind == "utf16":
        return encoded.decode().encode("utf-16")
    if kind == "bad_utf8":
        at = draw(st.integers(0, len(encoded)))
        return encoded[:at] + b"\xff\xfe" + encoded[at:]
    if kind == "oversize":
        return encoded[:-1] + b',"x_pad":"' + b"p" * pad + b'"}'
    if kind == "wrong_type":
        field = draw(st.sampled_from(fields))
        return encoded[:-1] + b',"' + field.encode() + b'":' + draw(st.sampled_from(values)) + b"}"
    return encoded
