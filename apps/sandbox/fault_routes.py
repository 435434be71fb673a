"""Test control of the fault switches under `/_sandbox/faults` (what each switch does: apps.sandbox.faults).

    GET    /_sandbox/faults         the active switches, counts and log
    POST   /_sandbox/faults/<name>  set one (JSON object of settings); "websockets" also closes them now
    DELETE /_sandbox/faults/<name>  clear one
    DELETE /_sandbox/faults         clear all (counts and log stay; /_sandbox/reset clears those too)

Loopback only, like every `/_sandbox/` route (apps.sandbox.admin_routes.admin_guard).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apps.sandbox.admin_routes import PREFIX, AdminError, body_of, sandbox_of
from apps.sandbox.fault_inject import drop_websockets
from apps.sandbox.fault_settings import FaultError
from apps.sandbox.faults import NAMES, WsDrop


def name_of(request: web.Request) -> str:
    name = request.match_info["name"]
    if name not in NAMES:
        raise AdminError(404, f"no such fault: {name!r}; the faults are: {', '.join(NAMES)}")
    return name


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response(sandbox_of(request).faults.view())


async def set_fault(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    name = name_of(request)
    data = await body_of(request)
    extra: dict[str, Any] = {}
    try:
        if name == "websockets":
            extra["dropped"] = await drop_websockets(sandbox, WsDrop.parse(data))
        else:
            sandbox.faults.set(name, data)
    except FaultError as exc:
        raise AdminError(400, str(exc)) from exc
    return web.json_response({**sandbox.faults.view(), **extra})


async def clear_fault(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    sandbox.faults.clear(name_of(request))
    return web.json_response(sandbox.faults.view())


async def clear_faults(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    sandbox.faults.clear()
    return web.json_response(sandbox.faults.view())


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/faults", list_faults)
    app.router.add_delete(f"{PREFIX}/faults", clear_faults)
    app.router.add_post(f"{PREFIX}/faults/{{name}}", set_fault)
    app.router.add_delete(f"{PREFIX}/faults/{{name}}", clear_fault)
