"""The installed version of ceilo-notifier."""

from __future__ import annotations

from importlib import metadata


def version_string() -> str:
    try:
        return metadata.version("ceilo-notifier")
    except metadata.PackageNotFoundError:
        return "0.0.0"
