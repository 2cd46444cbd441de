"""Small helpers shared by the bootstrap parts."""

from __future__ import annotations

import ipaddress
from typing import Any


def address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def seconds(value: float) -> str:
    return f"{value:.3f}s"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
