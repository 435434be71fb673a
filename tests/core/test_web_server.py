"""The web server exactly as `make run` starts it (launcher.run.web_argv), for real: uvicorn with the local
settings, on this session's test database. Debug pages, static files, hostile static paths, and whose address
counts for the lockout and the audit log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from axes.models import AccessAttempt

from apps.audit.models import AuditEntry
from launcher.embedded import free_port
from launcher.run import web_argv
from tests.harness import Harness
from tests.people import PASSWORD, make_person
from tests.processes import process_env

ROOT = Path(__file__).resolve().parents[2]
FORWARDED = "203.0.113.77"


@dataclass
class Web:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # no proxy from the environment between the test and the server
        return s

    def raw_get(self, target: bytes) -> tuple[int, str]:
        """GET with the request target sent byte for byte (no client-side normalising or quoting)."""
        request = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % self.port
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as conn:
            conn.sendall(request)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body.decode(errors="replace")


@pytest.fixture(scope="module")
def web_servers(
    services: Harness, tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[dict[str, Web]]:
    """Two servers as `make run` starts them: as it is, and with the documented opt-in BOTCONSOLE_DEBUG=1.

    The first has a plain DEBUG=true in its environment, as a developer's shell might: it must not matter.
    """
    servers: dict[str, Web] = {}
    try:
        for name, extra in {
            "make run": {"DEBUG": "true", "BOTCONSOLE_DEBUG": "0"},
            "debug": {"BOTCONSOLE_DEBUG": "1"},
        }.items():
            tmp = tmp_path_factory.mktemp("web")
            port = free_port()
            env = process_env(services, token=services.tokens["web"].token, var_dir=tmp / "var", **extra)
            log = tmp / "web.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    web_argv(port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            servers[name] = Web(port, proc, log)
        for web in servers.values():
            _wait(web)
        yield servers
    finally:
        for web in servers.values():
            os.killpg(web.proc.pid, signal.SIGTERM)
            web.proc.wait(timeout=20)


def _wait(web: Web) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert web.proc.poll() is None, web.log.read_text()
        try:
            requests.get(f"{web.base}/healthz", timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"uvicorn did not answer:\n{web.log.read_text()}")


# -- DEBUG -------------------------------------------------------------------------------------------


def test_make_run_serves_no_debug_page_and_only_botconsole_debug_turns_them_on(web_servers: dict[str, Web]) -> None:
    plain = web_servers["make run"].session().get(f"{web_servers['make run'].base}/static/no-such-file.css")
    assert plain.status_code == 404
    assert "<h1>Not found</h1>" in plain.text
    for told in ("URLconf", "Django", "Traceback", "no-such-file", "settings"):
        assert told not in plain.text, told
    # The opt-in really is the switch (so the check above could have failed).
    debug = web_servers["debug"].session().get(f"{web_servers['debug'].base}/static/no-such-file.css")
    assert debug.status_code == 404 and "URLconf" in debug.text


def test_make_run_serves_the_pages_css_and_javascript_without_debug(web_servers: dict[str, Web]) -> None:
    web = web_servers["make run"]
    s = web.session()
    login = s.get(f"{web.base}/accounts/login/")
    assert login.status_code == 200
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', login.text)
    assert stylesheet is not None
    css = s.get(f"{web.base}{stylesheet.group(1)}")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert css.content == (ROOT / "static" / "css" / "app.css").read_bytes()
    js = s.get(f"{web.base}/static/js/live.js")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert js.content == (ROOT / "static" / "js" / "live.js").read_bytes()


# -- hostile static paths ----------------------------------------------------------------------------

TRAVERSALS = [
    b"/static/../manage.py",
    b"/static/css/../../manage.py",
    b"/static/%2e%2e/%2e%2e/manage.py",
    b"/static/%2E%2E/%2E%2E/botconsole/settings/base.py",
    b"/static/..%2f..%2fmanage.py",
    b"/static/%2e%2e%2f%2e%2e%2fbotconsole%2fsettings%2fbase.py",
    b"/static/css/..%5c..%5cmanage.py",
    b"/static/css%2f..%2f..%2fmanage.py",
    b"/static/css/app.css%00",
    b"/static/css/app.css%00.js",
    b"/static/%00",
    b"/static/%00/../manage.py",
    b"/static//etc/passwd",
    b"/static/%2fetc%2fpasswd",
    b"/static/css/app.css/..",
    b"/static/css/%2e%2e/css/app.css",
    b"/static/%c0%ae%c0%ae/manage.py",
    b"/static/" + b"%2e%2e/" * 40 + b"etc/passwd",
]


@pytest.mark.parametrize("server", ["make run", "debug"])
def test_hostile_static_paths_are_not_found_never_a_server_error(web_servers: dict[str, Web], server: str) -> None:
    web = web_servers[server]
    for target in TRAVERSALS:
        status, body = web.raw_get(target)
        assert status == 404, (target, status, body[:300])
        assert "Traceback" not in body and "import " not in body, target
    # A raw NUL never reaches the application: uvicorn refuses the request line itself.
    status, _ = web.raw_get(b"/static/css/app.css\x00")
    assert status == 400
    assert web.raw_get(b"/static/css/app.css")[0] == 200  # the same server serves the real file


# -- the client address --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_locked_out_user_stays_locked_out_with_a_forwarded_header_and_the_audit_shows_the_peer(
    web_servers: dict[str, Web], settings: Any
) -> None:
    # The server runs the default password hasher; store the test user's password with it too.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    make_person("nadia", "viewer")
    web = web_servers["make run"]
    s = web.session()
    assert s.get(f"{web.base}/accounts/login/").status_code == 200

    def attempt(password: str, headers: dict[str, str] | None = None) -> int:
        response = s.post(
            f"{web.base}/accounts/login/",
            data={"username": "nadia", "password": password, "csrfmiddlewaretoken": s.cookies["csrftoken"]},
            headers=headers or {},
            allow_redirects=False,
        )
        return response.status_code

    assert [attempt("wrong password") for _ in range(5)] == [200, 200, 200, 200, 429]
    forged = {"X-Forwarded-For": FORWARDED, "Forwarded": f"for={FORWARDED}", "X-Real-IP": FORWARDED}
    # The right password, from "another address": still locked.
    assert attempt(PASSWORD, forged) == 429
    assert attempt(PASSWORD, {"X-Forwarded-For": f"{FORWARDED}, 127.0.0.1"}) == 429

    assert set(AccessAttempt.objects.filter(username="nadia").values_list("ip_address", flat=True)) == {"127.0.0.1"}
    failures = AuditEntry.objects.filter(action="login.failed", data__username="nadia")
    assert failures.count() >= 5 and set(failures.values_list("ip", flat=True)) == {"127.0.0.1"}
    lockouts = AuditEntry.objects.filter(action="login.locked_out")  # one per refused attempt
    assert lockouts.exists()
    assert {(e.ip, e.data["ip"]) for e in lockouts} == {("127.0.0.1", "127.0.0.1")}
    assert not AuditEntry.objects.filter(ip=FORWARDED).exists()
    assert FORWARDED not in str(list(AuditEntry.objects.values_list("data", flat=True)))
    assert not AuditEntry.objects.filter(action="login.success").exists()
