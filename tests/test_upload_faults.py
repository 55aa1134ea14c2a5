"""Uploads after faults, against real server processes: a body that stalls is dropped (408,
the connection closed, nothing kept) while a slow one that keeps coming is not; the temporary
file of a killed process is removed when the next one starts, and a live sibling's is not.
And the lock-file rules of :mod:`sluiceway.transfer.leftovers`, in process.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from serverproc import HOST, ServerProcess
from test_files import wait_until

from sluiceway.transfer.leftovers import LOCK_DIR, claim, held, remove_leftovers

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 1.0  # the stalling server's upload_read_timeout
BOUNDARY = "XyZzY"


def temporaries(directory: Path) -> list[Path]:
    """Upload temporary files anywhere below ``directory``."""
    return sorted(directory.rglob(".*.upload-*"))


def everything(directory: Path) -> list[str]:
    """Every file below ``directory`` but the lock files."""
    return sorted(
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file() and LOCK_DIR not in path.parts
    )


def start_upload(port: int, kind: str, name: str, sent: bytes, total: int) -> socket.socket:
    """A raw ``PUT /files/<name>`` (or a one-file form ``POST /uploads``) declaring ``total``
    bytes of file and sending only ``sent``; the socket, left open."""
    if kind == "put":
        prefix = b""
        head = f"PUT /files/{name} HTTP/1.1\r\nContent-Type: application/octet-stream\r\n"
        rest = b""
    else:
        prefix = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="{name}"\r\n\r\n'
        ).encode()
        rest = f"\r\n--{BOUNDARY}--\r\n".encode()
        head = (
            f"POST /uploads HTTP/1.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        )
    length = len(prefix) + total + len(rest)
    head += f"Host: {HOST}:{port}\r\nContent-Length: {length}\r\n\r\n"
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(head.encode() + prefix + sent)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The response, read until the server closes the connection."""
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stall-files")


@pytest.fixture(scope="module")
def server(files: Path) -> Iterator[ServerProcess]:
    env = {"SLUICEWAY_FILES_DIR": str(files), "SLUICEWAY_UPLOAD_READ_TIMEOUT": str(TIMEOUT)}
    proc = ServerProcess(env=env).start()
    yield proc
    proc.stop()
    assert "Traceback" not in proc.output(), proc.output()


# -- the read timeout ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["put", "post"])
def test_a_stalled_upload_is_dropped(server: ServerProcess, files: Path, kind: str) -> None:
    name = f"stalled-{kind}.bin"
    sock = start_upload(server.port, kind, name, b"x" * 500, 1000)
    try:
        wait_until(lambda: temporaries(files), 5, "the upload under way")
        started = time.monotonic()
        status, headers, body = read_response(sock)  # the server closes the connection
        waited = time.monotonic() - started
    finally:
        sock.close()
    assert status == 408, body
    assert headers["connection"] == "close"
    assert orjson.loads(body)["error"] == "upload_timeout"
    assert waited < TIMEOUT + 3, waited
    assert everything(files) == []  # nothing partial kept, no temporary file either
    # The server goes on serving, uploads included.
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        assert http.put(f"/files/after-{kind}.bin", content=b"fine").status_code == 201
    assert (files / f"after-{kind}.bin").read_bytes() == b"fine"
    (files / f"after-{kind}.bin").unlink()


def test_a_slow_upload_that_keeps_coming_is_not_dropped(server: ServerProcess, files: Path) -> None:
    """The timeout bounds the silence between two pieces, not the whole upload."""
    pieces = 6
    sock = start_upload(server.port, "put", "slow.bin", b"", pieces)
    try:
        for _ in range(pieces):  # 2.4 s in all, more than the timeout
            time.sleep(TIMEOUT * 0.4)
            sock.sendall(b"s")
        status, _, body = read_response_after_request(sock)
    finally:
        sock.close()
    assert status == 201, body
    assert (files / "slow.bin").read_bytes() == b"s" * pieces
    (files / "slow.bin").unlink()


def read_response_after_request(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The response to a keep-alive request: its head, then the body by Content-Length."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    rest = bytearray(body)
    while len(rest) < int(headers.get("content-length", "0")):
        rest += sock.recv(65536)
    return int(status_line.split()[1]), headers, bytes(rest)


# -- leftovers of killed processes ---------------------------------------------------------


def test_a_killed_process_leftover_is_removed_at_the_next_start(tmp_path: Path) -> None:
    env = {"SLUICEWAY_FILES_DIR": str(tmp_path), "SLUICEWAY_UPLOAD_READ_TIMEOUT": "60"}
    doomed = ServerProcess(env=env).start()
    sibling = ServerProcess(env=env).start()  # another worker on the same directory
    latest: ServerProcess | None = None
    sockets = []
    try:
        (tmp_path / "doomed").mkdir()
        (tmp_path / "live").mkdir()
        sockets.append(start_upload(doomed.port, "put", "doomed/a.bin", b"d" * 100, 200))
        sockets.append(start_upload(sibling.port, "put", "live/b.bin", b"l" * 100, 200))
        dead = wait_until(lambda: temporaries(tmp_path / "doomed"), 5, "the doomed upload")[0]
        live = wait_until(lambda: temporaries(tmp_path / "live"), 5, "the live upload")[0]
        assert doomed.proc is not None
        doomed.proc.kill()  # SIGKILL: nothing of it runs again
        doomed.proc.wait(10)
        assert dead.exists()

        latest = ServerProcess(env=env).start()
        wait_until(lambda: "removed 1 temporary upload file" in latest.output(), 10, "the cleanup")
        assert not dead.exists()
        assert live.exists()  # the sibling is mid-upload: its file stays
        locks = sorted(p.name for p in (tmp_path / LOCK_DIR).iterdir())
        assert len(locks) == 1  # the dead process's lock went; the sibling's stays
        assert live.name.split(".upload-")[1].startswith(locks[0].removesuffix(".lock"))

        sockets[1].sendall(b"l" * 100)  # the sibling's upload completes, unharmed
        status, _, body = read_response_after_request(sockets[1])
        assert status == 201, body
        assert (tmp_path / "live" / "b.bin").read_bytes() == b"l" * 200
        assert temporaries(tmp_path) == []
    finally:
        for sock in sockets:
            sock.close()
        for proc in (doomed, sibling, latest):
            if proc is not None:
                proc.stop()
    assert "Traceback" not in sibling.output(), sibling.output()


# -- the rules, in process -----------------------------------------------------------------


def test_which_leftovers_are_dead(tmp_path: Path) -> None:
    live_tag, fd = claim(tmp_path)  # held by this process, as by a live sibling
    try:
        dead_tag, dead_fd = claim(tmp_path)
        os.close(dead_fd)  # its process died: the lock file stays, unlocked
        gone_tag = "0123456789abcdef"  # its lock file is gone too
        (tmp_path / "sub").mkdir()
        names = {
            "live": f".a.bin.upload-{live_tag}-{'1' * 16}",
            "dead": f".b.bin.upload-{dead_tag}-{'2' * 16}",
            "gone": f"sub/.c.bin.upload-{gone_tag}-{'3' * 16}",
            "untagged": f".d.bin.upload-{'4' * 16}",  # written without a tag: never touched
            "user": "e.upload-0123456789abcdef-0123456789abcdef",  # not hidden: not ours
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x")
        assert held(tmp_path / LOCK_DIR / f"{live_tag}.lock")
        assert not held(tmp_path / LOCK_DIR / f"{dead_tag}.lock")
        assert not held(tmp_path / LOCK_DIR / f"{gone_tag}.lock")

        assert remove_leftovers(tmp_path) == 2
        left = {key for key, name in names.items() if (tmp_path / name).exists()}
        assert left == {"live", "untagged", "user"}
        assert sorted(p.name for p in (tmp_path / LOCK_DIR).iterdir()) == [f"{live_tag}.lock"]
        assert remove_leftovers(tmp_path, own_tag=live_tag) == 0
    finally:
        os.close(fd)
