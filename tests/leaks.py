"""Where a leaked secret could hide: a database dump, and every key and value in Redis."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from apps.core.files import pg_bin


def pg_dump() -> str:
    params = connection.get_connection_params()
    result = subprocess.run(
        [
            str(pg_bin("pg_dump")),
            "--data-only",
            "-h",
            params["host"],
            "-p",
            str(params["port"]),
            "-U",
            params["user"],
            params["dbname"],
        ],
        env={"PGPASSWORD": params["password"]},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def redis_dump() -> str:
    """Every value in the broker's Redis, with Celery message bodies base64-decoded."""
    r: Any = redis.Redis.from_url(settings.REDIS_URL)
    parts: list[str] = []
    for key in r.scan_iter():
        kind = r.type(key).decode()
        values: list[Any] = []
        if kind == "string":
            values = [r.get(key) or b""]
        elif kind == "list":
            values = list(r.lrange(key, 0, -1))
        elif kind == "hash":
            values = [v for pair in r.hgetall(key).items() for v in pair]
        elif kind == "set":
            values = list(r.smembers(key))
        elif kind == "zset":
            values = list(r.zrange(key, 0, -1))
        for value in values:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            parts.append(text)
            parts.extend(_decoded_bodies(text))
    return "\n".join(parts)


def _decoded_bodies(text: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError:
        return []
    found: list[str] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("body"), str):
                with contextlib.suppress(ValueError):
                    found.append(base64.b64decode(item["body"]).decode(errors="replace"))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
