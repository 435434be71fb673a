"""deploy/nginx/botconsole.conf with Debian's nginx: `nginx -t`, then for real in front of uvicorn.

The file is used as shipped; only what an installation would change is substituted: the server
name, the certificate paths, the ports and the static directory (plus a private prefix, pid and
log files, so nothing outside the test's directory is touched).
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from axes.models import AccessAttempt
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from apps.audit.models import AuditEntry
from launcher.embedded import free_port
from tests.deploy.conftest import DEPLOY, ROOT, Tls, make_tls
from tests.harness import Harness
from tests.people import PASSWORD, make_person
from tests.processes import process_env

NGINX = Path("/usr/sbin/nginx")
CONF = DEPLOY / "nginx" / "botconsole.conf"
SPOOFED = "203.0.113.7"


def web_unit_uvicorn_flags() -> list[str]:
    """The proxy-trust flags the production web unit gives uvicorn (deploy/systemd/botconsole-web.service)."""
    unit = (DEPLOY / "systemd" / "botconsole-web.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    words = exec_start.split()
    i = words.index("--forwarded-allow-ips")
    assert "--proxy-headers" in words
    return ["--proxy-headers", "--forwarded-allow-ips", words[i + 1]]


@dataclass
class Site:
    prefix: Path
    conf: Path
    https_port: int
    http_port: int


def render(tmp: Path, tls: Tls, *, server_name: str, upstream_port: int) -> Site:
    """The shipped file with an installation's substitutions, wrapped in a minimal nginx.conf."""
    text = CONF.read_text()
    http_port, https_port = free_port(), free_port()
    static = tmp / "static"
    static.mkdir(parents=True, exist_ok=True)
    (static / "probe.txt").write_text("static ok\n")
    replacements = {
        "console.example.com": server_name,
        "/etc/botconsole/tls/fullchain.pem": str(tls.cert),
        "/etc/botconsole/tls/privkey.pem": str(tls.key),
        "/var/lib/botconsole/static/": f"{static}/",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
    }
    for old, new in replacements.items():
        assert old in text, f"{old} is no longer in {CONF.name}: update this test's substitutions"
        text = text.replace(old, new)
    text = re.sub(r"listen (\[::\]:)?80;", lambda m: f"listen {m.group(1) or ''}{http_port};", text)
    text = re.sub(r"listen (\[::\]:)?443 ", lambda m: f"listen {m.group(1) or ''}{https_port} ", text)
    site = tmp / "botconsole.conf"
    site.write_text(text)
    main = tmp / "nginx.conf"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # Run as root, the workers would drop to "nobody", who may not enter pytest's 0700 directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(
        user + f"pid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'} info;\n"
        "daemon off;\n"
        "events {}\n"
        "http {\n"
        f"    access_log {tmp / 'access.log'};\n"
        f"{temp_paths}\n"
        f"    include {site};\n"
        "}\n"
    )
    return Site(prefix=tmp, conf=main, https_port=https_port, http_port=http_port)


def nginx(site: Site, *args: str) -> list[str]:
    return [str(NGINX), "-p", str(site.prefix), "-c", str(site.conf), "-e", str(site.prefix / "error.log"), *args]


def test_nginx_accepts_the_shipped_config(tmp_path: Path) -> None:
    assert NGINX.exists(), "Debian's nginx is missing: `make deploy-tools` installs it"
    tls = make_tls(tmp_path / "tls", "console.example.com")
    site = render(tmp_path / "nginx", tls, server_name="console.example.com", upstream_port=8000)
    result = subprocess.run(nginx(site, "-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_nginx_refuses_a_broken_config(tmp_path: Path) -> None:
    """The check above can fail: the same file with a directive nginx does not know is refused."""
    tls = make_tls(tmp_path / "tls", "console.example.com")
    site = render(tmp_path / "nginx", tls, server_name="console.example.com", upstream_port=8000)
    site_file = site.prefix / "botconsole.conf"
    site_file.write_text(
        site_file.read_text().replace("server_tokens off;", "server_tokens off;\n    no_such_directive on;")
    )
    result = subprocess.run(nginx(site, "-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "no_such_directive" in result.stderr


# -- for real: nginx in front of uvicorn ---------------------------------------------------------


class Proxy:
    def __init__(self, site: Site, web: subprocess.Popen[bytes], nginx_proc: subprocess.Popen[bytes], ca: Path):
        self.site, self.web, self.nginx, self.ca = site, web, nginx_proc, ca
        self.base = f"https://localhost:{site.https_port}"
        # What a browser on this page sends: nginx passes Host without the port, as on port 443.
        self.origin = "https://localhost"

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment would override `verify`
        s.verify = str(self.ca)
        return s


def _wait(url: str, verify: str | bool, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            requests.get(url, verify=verify, timeout=2, allow_redirects=False)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"{what} did not answer {url}")


@pytest.fixture(scope="module")
def proxy(services: Harness, tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Proxy]:
    """uvicorn with the web unit's proxy flags (on the test database) behind nginx with the shipped config."""
    tmp_path = tmp_path_factory.mktemp("proxy")
    web_port = free_port()
    env = process_env(services, token=services.tokens["web"].token, var_dir=tmp_path / "var", DEBUG="false")
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "botconsole.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(web_port),
            "--lifespan",
            "off",
            *web_unit_uvicorn_flags(),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    tls = make_tls(tmp_path / "tls", "localhost")
    site = render(tmp_path / "nginx", tls, server_name="localhost", upstream_port=web_port)
    nginx_proc = subprocess.Popen(nginx(site), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{web_port}/healthz", False, web, "uvicorn")
        _wait(f"https://localhost:{site.https_port}/healthz", str(tls.ca), nginx_proc, "nginx")
        yield Proxy(site, web, nginx_proc, tls.ca)
    finally:
        nginx_proc.send_signal(signal.SIGQUIT)
        nginx_proc.wait(timeout=20)
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=20)


@pytest.mark.django_db(transaction=True)
def test_through_nginx_the_app_sees_https_and_the_real_client_address_never_a_forged_one(
    proxy: Proxy, settings: Any
) -> None:
    # The server runs the default password hasher; store the test user's password with it too.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    who = make_person("nadia", "viewer")
    s = proxy.session()
    page = s.get(f"{proxy.base}/accounts/login/")
    assert page.status_code == 200
    assert page.raw.headers.getlist("Strict-Transport-Security") == ["max-age=63072000; includeSubDomains; preload"]
    forged = {"X-Forwarded-For": SPOOFED, "X-Forwarded-Proto": "http", "Origin": proxy.origin}

    # CSRF passes only if the app sees https (the Origin says https); the forged headers are overwritten.
    failed = s.post(
        f"{proxy.base}/accounts/login/",
        data={"username": "nadia", "password": "wrong password", "csrfmiddlewaretoken": s.cookies["csrftoken"]},
        headers=forged,
        allow_redirects=False,
    )
    assert failed.status_code == 200, failed.status_code  # a CSRF refusal would be 403
    attempts = list(AccessAttempt.objects.filter(username="nadia").values_list("ip_address", flat=True))
    assert attempts == ["127.0.0.1"]
    failure = AuditEntry.objects.filter(action="login.failed").latest("seq")
    assert failure.ip == "127.0.0.1"

    password_ok = s.post(
        f"{proxy.base}/accounts/login/",
        data={"username": "nadia", "password": PASSWORD, "csrfmiddlewaretoken": s.cookies["csrftoken"]},
        headers=forged,
        allow_redirects=False,
    )
    assert password_ok.status_code == 302, password_ok.content[:300]
    verified = s.post(
        f"{proxy.base}/accounts/otp/",
        data={"code": who.code(), "csrfmiddlewaretoken": s.cookies["csrftoken"]},
        headers=forged,
        allow_redirects=False,
    )
    assert verified.status_code == 302 and verified.headers["Location"] == "/"
    login = AuditEntry.objects.filter(action="login.success", actor="nadia").get()
    assert login.ip == "127.0.0.1" and SPOOFED not in str(login.data)

    # The websocket upgrade passes through nginx, and the OTP-verified session opens the live feed.
    context = ssl.create_default_context(cafile=str(proxy.ca))
    cookie = "; ".join(f"{k}={v}" for k, v in s.cookies.items())
    url = f"wss://localhost:{proxy.site.https_port}/ws/live/"
    origin = Origin(proxy.origin)
    with ws_connect(url, ssl=context, origin=origin, additional_headers={"Cookie": cookie}) as socket:
        assert socket.response is not None and socket.response.status_code == 101
    # Without the session the same upgrade reaches the app and is refused there.
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, ssl=context, origin=origin)
    assert refused.value.response.status_code == 403


def test_through_nginx_plain_http_redirects_and_static_files_carry_hsts(proxy: Proxy) -> None:
    plain = requests.get(f"http://127.0.0.1:{proxy.site.http_port}/accounts/login/", allow_redirects=False, timeout=5)
    assert plain.status_code == 301
    assert plain.headers["Location"] == "https://localhost/accounts/login/"
    static = proxy.session().get(f"{proxy.base}/static/probe.txt")
    assert static.status_code == 200 and static.text == "static ok\n"
    assert static.raw.headers.getlist("Strict-Transport-Security") == ["max-age=63072000; includeSubDomains; preload"]
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    assert "nginx/" not in static.headers.get("Server", "")


def test_through_nginx_a_client_naming_another_host_is_refused_in_the_handshake(proxy: Proxy) -> None:
    context = ssl.create_default_context(cafile=str(proxy.ca))
    import socket

    with (
        socket.create_connection(("127.0.0.1", proxy.site.https_port), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"),
    ):
        context.wrap_socket(raw, server_hostname="other.example.org")
