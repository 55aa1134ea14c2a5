"""Debian's nginx in front of a test server, with the deployment's own configuration
(``deploy/nginx/sluiceway.conf``) rendered for the test: its ports, a certificate made here,
the test's host name. The site file is the real one; only what a reader is told to replace
(names, paths, ports) is replaced, each replacement checked to have applied, so that a change
to the file that breaks the rendering fails loudly instead of testing something else.

A private prefix (a temporary directory) holds nginx's own files: the main configuration that
includes the site (as Debian's ``nginx.conf`` includes ``sites-enabled/``), the pid file, the
logs and the temporary paths.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from serverproc import HOST, free_port

NGINX = Path("/usr/sbin/nginx")
OPENSSL = shutil.which("openssl")
SITE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "sluiceway.conf"
#: The public name the test serves (Chromium maps it to loopback; the certificate names it).
SERVER_NAME = "sluiceway.test"
START_TIMEOUT = 10.0


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for :data:`SERVER_NAME` and 127.0.0.1, and its key."""
    assert OPENSSL is not None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={SERVER_NAME}",
            "-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def render_site(
    *,
    upstream_port: int,
    https_port: int,
    http_port: int,
    cert: Path,
    key: Path,
    log: Path,
    error_log: Path,
) -> str:
    """``deploy/nginx/sluiceway.conf`` with what its reader is told to change, changed."""
    text = SITE.read_text()
    replacements = [
        ("server 127.0.0.1:8000;", f"server {HOST}:{upstream_port};"),
        ("listen 443 ssl http2;", f"listen {HOST}:{https_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),  # loopback IPv4 is enough here
        ("listen 80;", f"listen {HOST}:{http_port};"),
        ("listen [::]:80;", ""),
        ("/etc/letsencrypt/live/sluiceway.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/sluiceway.example.com/privkey.pem", str(key)),
        ("/var/log/nginx/sluiceway.access.log", str(log)),
        ("/var/log/nginx/sluiceway.error.log", str(error_log)),
        ("server_name sluiceway.example.com;", f"server_name {SERVER_NAME};"),
    ]
    for old, new in replacements:
        assert old in text, f"{SITE.name} no longer has {old!r}: update the test's rendering"
        text = text.replace(old, new)
    return text


class NginxProcess:
    """``nginx -p <tmp> -c <tmp>/nginx.conf`` in the foreground, proxying to
    ``upstream_port``; ``https_url`` is its TLS origin, ``ssl_context`` trusts its certificate."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.dir = Path(tempfile.mkdtemp(prefix="sluiceway-nginx-"))
        self.https_port = free_port()
        self.http_port = free_port()
        self.cert, self.key = make_certificate(self.dir)
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def https_url(self) -> str:
        return f"https://{HOST}:{self.https_port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def write_config(self) -> Path:
        site = self.dir / "sluiceway.conf"
        site.write_text(
            render_site(
                upstream_port=self.upstream_port,
                https_port=self.https_port,
                http_port=self.http_port,
                cert=self.cert,
                key=self.key,
                log=self.access_log,
                error_log=self.dir / "site-error.log",
            )
        )
        temp = {name: self.dir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        # Workers run as root when the tests do: the private prefix is root's alone.
        user = "user root;\n" if os.geteuid() == 0 else ""
        main = self.dir / "nginx.conf"
        main.write_text(
            f"{user}worker_processes 1;\npid {self.dir / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    client_body_temp_path {temp['body']};\n"
            f"    proxy_temp_path {temp['proxy']};\n"
            f"    fastcgi_temp_path {temp['fastcgi']};\n"
            f"    uwsgi_temp_path {temp['uwsgi']};\n"
            f"    scgi_temp_path {temp['scgi']};\n"
            f"    include {site};\n"
            "}\n"
        )
        return main

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the rendered configuration."""
        main = self.write_config()
        return subprocess.run(
            [str(NGINX), "-t", "-p", str(self.dir), "-c", str(main)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self) -> NginxProcess:
        checked = self.check()
        assert checked.returncode == 0, checked.stderr
        main = self.dir / "nginx.conf"
        self.proc = subprocess.Popen(
            [str(NGINX), "-p", str(self.dir), "-c", str(main), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{self.errors()}")
            try:
                socket.create_connection((HOST, self.https_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)  # polling interval, not an assertion
        raise RuntimeError(f"nginx did not listen:\n{self.errors()}")

    def errors(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # fast shutdown (SIGTERM), streams and all
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
