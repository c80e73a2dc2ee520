"""The machine description every benchmark result carries."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

_PACKAGES = (
    "corl-graph",
    "langgraph",
    "langchain-core",
    "langchain-openai",
    "openai",
    "opentelemetry-sdk",
    "torch",
    "transformers",
    "trl",
    "psycopg",
    "fastapi",
    "uvicorn",
)


def machine() -> dict[str, Any]:
    """CPU, memory, OS and the versions of the packages that matter for performance."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem_gib, 1) if mem_gib else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
        "versions": versions,
    }
