"""Files: ``GET/HEAD/PUT /files/{path}`` and ``POST /uploads``, against real server processes.

Two servers per module (starting one costs seconds): ``server`` with a 256 MiB upload limit,
and ``small`` with a 1 MiB limit and a publish key. Tests use names of their own in the
shared directories. Traversal attempts go over a raw socket, because HTTP clients normalise
``..`` and friends away before sending.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from serverproc import HOST, ServerProcess
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.transfer.download import file_response

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
KEY = "files-key"
CONTENT = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable mod 256


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/files`` is served; ``root/secret.txt`` lies outside and must stay unreachable."""
    base = tmp_path_factory.mktemp("files-root")
    (base / "files").mkdir()
    (base / "secret.txt").write_bytes(b"TOP SECRET")
    return base


@pytest.fixture(scope="module")
def files(root: Path) -> Path:
    return root / "files"


@pytest.fixture(scope="module")
def server(files: Path) -> Iterator[ServerProcess]:
    env = {"SLUICEWAY_FILES_DIR": str(files), "SLUICEWAY_MAX_UPLOAD_BYTES": str(256 * MiB)}
    proc = ServerProcess(env=env).start()
    yield proc
    proc.stop()
    assert "Traceback" not in proc.output(), proc.output()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "SLUICEWAY_FILES_DIR": str(tmp_path_factory.mktemp("small-files")),
        "SLUICEWAY_MAX_UPLOAD_BYTES": str(MiB),
        "SLUICEWAY_PUBLISH_KEY": KEY,
    }
    proc = ServerProcess(env=env).start()
    yield proc
    proc.stop()
    assert "Traceback" not in proc.output(), proc.output()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    # identity: these tests look at lengths and bytes exactly as the file response sends them
    with httpx.Client(
        base_url=server.url, timeout=10.0, headers={"accept-encoding": "identity"}
    ) as client:
        yield client


@pytest.fixture
def name() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sample(files: Path, name: str) -> str:
    """A 10 KiB file in the served directory; its name."""
    (files / f"{name}.bin").write_bytes(CONTENT)
    return f"{name}.bin"


# -- helpers -------------------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert body["detail"]
    return body


def raw_request(
    port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as written (no normalisation); the response, read to EOF."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, payload


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)  # polling interval, not an assertion
    raise AssertionError(f"not within {timeout} s: {what}")


PLANTED = ".x.upload-0123"  # a fake one in the traps fixture


def leftovers(directory: Path) -> list[Path]:
    """In-progress upload files anywhere below ``directory``."""
    found = directory.rglob(".*.upload-*") if directory.exists() else []
    return [path for path in found if path.name != PLANTED]


def form(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZzY") -> bytes:
    """A multipart/form-data body: (field name, filename or None for a text field, content)."""
    out = b""
    for field, filename, content in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


FORM_TYPE = "multipart/form-data; boundary=XyZzY"


class PeakRSS:
    """The highest RSS of a process seen while the block runs (sampled every 10 ms)."""

    def __init__(self, server: ServerProcess) -> None:
        self.ps = server.ps
        self.before = self.peak = self.ps.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.ps.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / MiB


# -- downloads: whole files, HEAD, headers -------------------------------------------------


def test_get_whole_file_with_validators(http: httpx.Client, sample: str, files: Path) -> None:
    response = http.get(f"/files/{sample}")
    assert response.status_code == 200
    assert response.content == CONTENT
    headers = response.headers
    assert headers["content-length"] == str(len(CONTENT))
    assert headers["content-type"] == "application/octet-stream"
    assert headers["accept-ranges"] == "bytes"
    # Not a passive type: an attachment (only images, audio, video, PDF and text are shown).
    assert headers["content-disposition"] == f'attachment; filename="{sample}"'
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "sandbox"
    info = (files / sample).stat()
    assert headers["etag"] == f'"{info.st_size:x}-{info.st_mtime_ns:x}-{info.st_ino:x}"'
    assert headers["last-modified"] == formatdate(int(info.st_mtime), usegmt=True)


def test_head_sends_the_headers_of_get_and_no_body(server: ServerProcess, sample: str) -> None:
    status, headers, body = raw_request(server.port, "HEAD", f"/files/{sample}")
    assert status == 200 and body == b""
    assert headers["content-length"] == str(len(CONTENT))
    assert headers["etag"] and headers["last-modified"]
    # Range is defined for GET only: a HEAD with one still describes the whole file.
    status, headers, body = raw_request(
        server.port, "HEAD", f"/files/{sample}", {"Range": "bytes=0-9"}
    )
    assert status == 200 and body == b"" and "content-range" not in headers


@pytest.mark.parametrize(
    ("filename", "media_type"),
    [
        ("notes.txt", "text/plain"),
        ("table.csv", "text/csv"),
        ("archive.tar.gz", "application/gzip"),  # the bytes are gzip; no Content-Encoding
        ("no-extension", "application/octet-stream"),
    ],
)
def test_content_type_by_extension(
    http: httpx.Client, files: Path, name: str, filename: str, media_type: str
) -> None:
    (files / name).mkdir()
    (files / name / filename).write_bytes(b"x")
    response = http.get(f"/files/{name}/{filename}")
    assert response.headers["content-type"] == media_type
    assert "content-encoding" not in response.headers


def test_html_is_an_attachment_and_sandboxed(http: httpx.Client, files: Path, name: str) -> None:
    (files / f"{name}.html").write_bytes(b"<script>alert(1)</script>")
    response = http.get(f"/files/{name}.html")
    assert response.headers["content-type"] == "text/html"
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["content-disposition"].startswith("attachment;")


def test_non_ascii_name_content_disposition(http: httpx.Client, files: Path) -> None:
    filename = f"Résumé «{uuid.uuid4().hex[:6]}» 数据.pdf"
    (files / filename).write_bytes(b"%PDF")
    response = http.get("/files/" + quote(filename))
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    fallback = re.search(r'filename="([^"]*)"', disposition)
    encoded = re.search(r"filename\*=UTF-8''(\S+)", disposition)
    assert disposition.startswith("inline;")
    assert fallback is not None and fallback[1].isascii() and fallback[1].startswith("Resume _")
    assert encoded is not None and unquote(encoded[1]) == filename

    response = http.get("/files/" + quote(filename), params={"download": "1"})
    assert response.headers["content-disposition"].startswith("attachment;")


def test_empty_file(http: httpx.Client, files: Path, name: str) -> None:
    (files / name).write_bytes(b"")
    response = http.get(f"/files/{name}")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "0"
    # No Content-Range can describe zero bytes: the range is ignored and the (empty) file sent.
    response = http.get(f"/files/{name}", headers={"range": "bytes=-5"})
    assert response.status_code == 200 and response.content == b""


async def test_whole_file_goes_by_pathsend_when_the_server_offers_it(
    files: Path, sample: str
) -> None:
    """uvicorn does not offer ``http.response.pathsend``; a server that does gets the path of
    a whole file (to sendfile it) instead of its bytes. In-process: no server offers it here."""

    async def endpoint(request: Request) -> Response:
        return await file_response(request, files / sample)

    app = Starlette(routes=[Route("/f", endpoint)])

    async def request(headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        received = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if received.is_set():
                await asyncio.Event().wait()  # the client never leaves
            received.set()
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/f",
            "raw_path": b"/f",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "server": ("test", 80),
            "extensions": {"http.response.pathsend": {}},
        }
        await app(scope, receive, send)
        return messages

    start, body = await request([])
    assert start["status"] == 200
    assert body == {"type": "http.response.pathsend", "path": str(files / sample)}
    start, *bodies = await request([(b"range", b"bytes=0-9")])  # a range: bytes, as usual
    assert start["status"] == 206
    assert b"".join(m["body"] for m in bodies) == CONTENT[:10]


# -- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=-500", len(CONTENT) - 500, len(CONTENT)),
        ("bytes=500-", 500, len(CONTENT)),
        ("bytes=10000-999999", 10000, len(CONTENT)),  # clipped to the end
        ("bytes=0-0", 0, 1),
        ("bytes=0-10, 5-20", 0, 21),  # overlapping ranges are merged into one
    ],
)
def test_single_range(http: httpx.Client, sample: str, header: str, start: int, stop: int) -> None:
    response = http.get(f"/files/{sample}", headers={"range": header})
    assert response.status_code == 206
    assert response.content == CONTENT[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(CONTENT)}"
    assert response.headers["content-length"] == str(stop - start)
    assert response.headers["content-type"] == "application/octet-stream"


def parse_byteranges(response: httpx.Response) -> list[tuple[str, str, bytes]]:
    """The parts of a multipart/byteranges body: (Content-Type, Content-Range, data)."""
    media_type, _, boundary = response.headers["content-type"].partition("; boundary=")
    assert media_type == "multipart/byteranges" and boundary
    delimiter = b"\r\n--" + boundary.encode()
    body = b"\r\n" + response.content  # the first delimiter has no CRLF before it
    assert body.endswith(delimiter + b"--\r\n")
    parts = []
    for chunk in body[: -len(delimiter + b"--\r\n")].split(delimiter)[1:]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().strip().split("\r\n"))
        parts.append((fields["Content-Type"], fields["Content-Range"], data))
    return parts


def test_multiple_ranges_are_multipart(http: httpx.Client, sample: str) -> None:
    response = http.get(f"/files/{sample}", headers={"range": "bytes=-10, 0-9, 100-199"})
    assert response.status_code == 206
    assert "content-range" not in response.headers
    assert response.headers["content-length"] == str(len(response.content))
    size = len(CONTENT)
    assert parse_byteranges(response) == [
        ("application/octet-stream", f"bytes 0-9/{size}", CONTENT[:10]),
        ("application/octet-stream", f"bytes 100-199/{size}", CONTENT[100:200]),
        ("application/octet-stream", f"bytes {size - 10}-{size - 1}/{size}", CONTENT[-10:]),
    ]


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0"])
def test_unsatisfiable_range_is_416(http: httpx.Client, sample: str, header: str) -> None:
    response = http.get(f"/files/{sample}", headers={"range": header})
    assert_error(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


@pytest.mark.parametrize(
    "header", ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=", "bytes=1-2-3", "0-99", "bytes=--1"]
)
def test_malformed_range_is_ignored(http: httpx.Client, sample: str, header: str) -> None:
    response = http.get(f"/files/{sample}", headers={"range": header})
    assert response.status_code == 200
    assert response.content == CONTENT


def test_too_many_ranges_are_ignored(http: httpx.Client, sample: str) -> None:
    header = "bytes=" + ",".join(f"{n * 10}-{n * 10}" for n in range(101))
    response = http.get(f"/files/{sample}", headers={"range": header})
    assert response.status_code == 200 and response.content == CONTENT


# -- conditional requests --------------------------------------------------------------------


def validators(http: httpx.Client, path: str) -> tuple[str, str]:
    response = http.head(f"/files/{path}")
    return response.headers["etag"], response.headers["last-modified"]


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", 'W/"nope", {etag}', "W/{etag}", "*", '"nope",{etag}'],
)
def test_if_none_match_304(http: httpx.Client, sample: str, if_none_match: str) -> None:
    etag, last_modified = validators(http, sample)
    response = http.get(
        f"/files/{sample}", headers={"if-none-match": if_none_match.format(etag=etag)}
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["last-modified"] == last_modified


def test_if_none_match_wins_over_if_modified_since(http: httpx.Client, sample: str) -> None:
    _, last_modified = validators(http, sample)
    headers = {"if-none-match": '"other"', "if-modified-since": last_modified}
    response = http.get(f"/files/{sample}", headers=headers)
    assert response.status_code == 200 and response.content == CONTENT


def test_if_modified_since(http: httpx.Client, sample: str) -> None:
    _, last_modified = validators(http, sample)
    assert (
        http.get(f"/files/{sample}", headers={"if-modified-since": last_modified}).status_code
        == 304
    )
    later = formatdate(time.time() + 3600, usegmt=True)
    assert http.get(f"/files/{sample}", headers={"if-modified-since": later}).status_code == 304
    earlier = formatdate(time.time() - 3600 * 24 * 365, usegmt=True)
    response = http.get(f"/files/{sample}", headers={"if-modified-since": earlier})
    assert response.status_code == 200 and response.content == CONTENT
    response = http.get(f"/files/{sample}", headers={"if-modified-since": "not a date"})
    assert response.status_code == 200


def test_if_match_and_if_unmodified_since_412(http: httpx.Client, sample: str) -> None:
    etag, last_modified = validators(http, sample)
    assert_error(
        http.get(f"/files/{sample}", headers={"if-match": '"other"'}), 412, "precondition_failed"
    )
    assert_error(
        http.get(f"/files/{sample}", headers={"if-match": f"W/{etag}"}), 412, "precondition_failed"
    )
    assert http.get(f"/files/{sample}", headers={"if-match": etag}).status_code == 200
    assert http.get(f"/files/{sample}", headers={"if-match": "*"}).status_code == 200
    long_ago = formatdate(0, usegmt=True)
    response = http.get(f"/files/{sample}", headers={"if-unmodified-since": long_ago})
    assert_error(response, 412, "precondition_failed")
    response = http.get(f"/files/{sample}", headers={"if-unmodified-since": last_modified})
    assert response.status_code == 200


def test_if_range(http: httpx.Client, sample: str) -> None:
    etag, last_modified = validators(http, sample)
    partial = {"range": "bytes=0-9"}
    for current in (etag, last_modified):
        response = http.get(f"/files/{sample}", headers={**partial, "if-range": current})
        assert response.status_code == 206 and response.content == CONTENT[:10]
    stale = ['"0-0-0"', f"W/{etag}", formatdate(0, usegmt=True)]  # weak tags never match
    for validator in stale:
        response = http.get(f"/files/{sample}", headers={**partial, "if-range": validator})
        assert response.status_code == 200 and response.content == CONTENT


def test_etag_changes_when_the_file_is_replaced(
    http: httpx.Client, sample: str, files: Path
) -> None:
    etag, _ = validators(http, sample)
    (files / sample).write_bytes(b"new content")
    response = http.get(f"/files/{sample}", headers={"if-none-match": etag})
    assert response.status_code == 200 and response.content == b"new content"
    assert response.headers["etag"] != etag


# -- path safety -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traps(root: Path, files: Path) -> Path:
    """Symlinks and hidden files inside the served directory."""
    (files / "traps").mkdir()
    (files / "traps" / "link-out").symlink_to(root / "secret.txt")
    (files / "traps" / "dir-out").symlink_to(root)
    (files / "traps" / "link-in").symlink_to(files / "traps" / "inside.txt")
    (files / "traps" / "inside.txt").write_bytes(b"INSIDE CONTENT")
    (files / "traps" / ".hidden").write_bytes(b"HIDDEN CONTENT")
    (files / "traps" / PLANTED).write_bytes(b"half an upload")
    return files / "traps"


ESCAPES = [
    "/files/../secret.txt",
    "/files/traps/../../secret.txt",
    "/files/%2e%2e/secret.txt",
    "/files/%2E%2E%2Fsecret.txt",
    "/files/traps/..%2f..%2fsecret.txt",
    "/files/..%5csecret.txt",
    "/files/traps\\..\\..\\secret.txt",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/files/traps/inside.txt%00.png",
    "/files/traps/link-out",
    "/files/traps/dir-out/secret.txt",
    "/files/traps/.hidden",
    "/files/traps/.x.upload-0123",
    "/files/./traps/inside.txt",
    "/files/traps//inside.txt",
    "/files/%252e%252e/secret.txt",
    "/files/traps",
    "/files/traps/",
    "/files/",
]


@pytest.mark.parametrize("target", ESCAPES)
def test_download_escapes_are_404(server: ServerProcess, traps: Path, target: str) -> None:
    status, headers, body = raw_request(server.port, "GET", target)
    for content in (
        b"TOP SECRET",
        b"root:",
        b"HIDDEN CONTENT",
        b"half an upload",
        b"INSIDE CONTENT",
    ):
        assert content not in body
    assert status == 404, (status, body)
    assert headers["content-type"] == "application/json"
    assert b'"error":"not_found"' in body


def test_symlink_inside_the_directory_is_followed(http: httpx.Client, traps: Path) -> None:
    assert http.get("/files/traps/link-in").content == b"INSIDE CONTENT"


# Not escapes for an upload: a directory (409) and a literal name "%2e%2e" (allowed).
UPLOAD_ESCAPES = [t for t in ESCAPES if t not in ("/files/traps", "/files/%252e%252e/secret.txt")]


@pytest.mark.parametrize("target", UPLOAD_ESCAPES)
def test_upload_escapes_are_400(
    server: ServerProcess, root: Path, traps: Path, target: str
) -> None:
    before = sorted(root.rglob("*"))
    status, _, body = raw_request(server.port, "PUT", target + "?overwrite=1", body=b"pwned")
    assert status == 400, (status, body)
    assert b'"error":"invalid_path"' in body
    assert sorted(root.rglob("*")) == before
    assert (root / "secret.txt").read_bytes() == b"TOP SECRET"


# -- uploads: PUT ------------------------------------------------------------------------------


def test_put_round_trip(http: httpx.Client, files: Path, name: str) -> None:
    content = os.urandom(3 * MiB + 17)
    response = http.put(f"/files/{name}/deep/er/data.bin", content=content)
    assert response.status_code == 201, response.text
    body = response.json()
    path = f"{name}/deep/er/data.bin"
    assert body == {
        "path": path,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "created": True,
    }
    assert response.headers["location"] == f"/files/{path}"
    assert (files / path).read_bytes() == content
    assert http.get(f"/files/{path}").content == content
    assert not leftovers(files / name)


def test_put_never_overwrites_without_asking(http: httpx.Client, files: Path, name: str) -> None:
    assert http.put(f"/files/{name}", content=b"first").status_code == 201
    assert_error(http.put(f"/files/{name}", content=b"second"), 409, "file_exists")
    assert (files / name).read_bytes() == b"first"
    response = http.put(f"/files/{name}", params={"overwrite": "1"}, content=b"second")
    assert response.status_code == 200 and response.json()["created"] is False
    assert response.json()["sha256"] == hashlib.sha256(b"second").hexdigest()
    assert (files / name).read_bytes() == b"second"
    assert not leftovers(files)


def test_put_conflicts_with_directories(http: httpx.Client, files: Path, name: str) -> None:
    (files / name).mkdir()
    (files / name / "file").write_bytes(b"x")
    for path in (name, f"{name}/file/below"):
        response = http.put(f"/files/{path}", params={"overwrite": "1"}, content=b"y")
        assert_error(response, 409, "path_conflict")
    assert (files / name / "file").read_bytes() == b"x"


def test_put_unicode_name(http: httpx.Client, files: Path, name: str) -> None:
    filename = f"{name}-données 📦.txt"
    response = http.put("/files/" + quote(filename), content=b"ok")
    assert response.status_code == 201 and response.json()["path"] == filename
    assert (files / filename).read_bytes() == b"ok"


# -- uploads: POST multipart -------------------------------------------------------------------


def test_post_form_round_trip(http: httpx.Client, files: Path, name: str) -> None:
    first, second = os.urandom(2 * MiB), b"tiny"
    body = form(
        [
            ("path", None, f"{name}/inbox".encode()),
            ("note", None, b"an unrelated field, ignored"),
            ("file", "a.bin", first),
            ("file", "données.txt", second),
        ]
    )
    response = http.post("/uploads", content=body, headers={"content-type": FORM_TYPE})
    assert response.status_code == 201, response.text
    assert response.json() == {
        "files": [
            {
                "field": "file",
                "path": f"{name}/inbox/a.bin",
                "size": len(first),
                "sha256": hashlib.sha256(first).hexdigest(),
                "created": True,
            },
            {
                "field": "file",
                "path": f"{name}/inbox/données.txt",
                "size": 4,
                "sha256": hashlib.sha256(second).hexdigest(),
                "created": True,
            },
        ]
    }
    assert (files / name / "inbox" / "a.bin").read_bytes() == first
    assert http.get(f"/files/{name}/inbox/données.txt").content == second
    assert not leftovers(files / name)


def test_post_with_httpx_files(http: httpx.Client, files: Path, name: str) -> None:
    response = http.post("/uploads", data={"path": name}, files={"upload": ("x.csv", b"a,b\n")})
    assert response.status_code == 201, response.text
    assert response.json()["files"][0]["path"] == f"{name}/x.csv"


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("application/json", b"{}", 415, "unsupported_media_type"),
        ("", b"x", 415, "unsupported_media_type"),
        ("multipart/form-data", form([("f", "a", b"x")]), 400, "missing_boundary"),
        (FORM_TYPE, form([("f", "", b"x")]), 400, "missing_filename"),
        (FORM_TYPE, form([("text", None, b"only text")]), 400, "no_files"),
        (FORM_TYPE, b"garbage without any boundary", 400, "invalid_multipart"),
        (FORM_TYPE, b"--XyZzY\r\nbroken header line\r\n\r\n", 400, "invalid_multipart"),
    ],
)
def test_post_bad_forms(
    http: httpx.Client, files: Path, content_type: str, body: bytes, status: int, code: str
) -> None:
    response = http.post("/uploads", content=body, headers={"content-type": content_type})
    assert_error(response, status, code)
    assert not leftovers(files)


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ([("f", "../escape.txt", b"x")], "invalid_path"),
        ([("f", "/abs.txt", b"x")], "invalid_path"),
        ([("f", ".hidden", b"x")], "invalid_path"),
        ([("f", "{d}/a\\b.txt", b"x")], "invalid_path"),
        ([("path", None, b"../out"), ("f", "a.txt", b"x")], "invalid_path"),
        ([("path", None, b"/tmp"), ("f", "a.txt", b"x")], "invalid_path"),
        ([("f", "{d}/a.txt", b"x"), ("path", None, b"late")], "invalid_form"),
        ([("f", "{d}/same.txt", b"x"), ("g", "{d}/same.txt", b"y")], "duplicate_path"),
    ],
)
def test_post_refusals_leave_nothing(
    http: httpx.Client,
    root: Path,
    name: str,
    parts: list[tuple[str, str | None, bytes]],
    code: str,
) -> None:
    parts = [(field, n and n.format(d=name), content) for field, n, content in parts]
    before = sorted(root.rglob("*"))
    response = http.post("/uploads", content=form(parts), headers={"content-type": FORM_TYPE})
    assert_error(response, 400, code)
    assert sorted(root.rglob("*")) == before  # not even the directory made for the first file


def test_post_truncated_body_leaves_nothing(http: httpx.Client, files: Path, name: str) -> None:
    body = form([("path", None, name.encode()), ("f", "a.bin", os.urandom(MiB))])
    response = http.post(
        "/uploads", content=body[:-30], headers={"content-type": FORM_TYPE}
    )  # no closing boundary
    assert_error(response, 400, "invalid_multipart")
    assert not (files / name / "a.bin").exists()
    assert not leftovers(files)


def test_post_is_all_or_nothing(http: httpx.Client, files: Path, name: str) -> None:
    (files / name).mkdir()
    (files / name / "taken.txt").write_bytes(b"keep me")
    body = form([("path", None, name.encode()), ("a", "new.txt", b"1"), ("b", "taken.txt", b"2")])
    response = http.post("/uploads", content=body, headers={"content-type": FORM_TYPE})
    assert_error(response, 409, "file_exists")
    assert sorted(p.name for p in (files / name).iterdir()) == ["taken.txt"]
    assert (files / name / "taken.txt").read_bytes() == b"keep me"

    response = http.post(
        "/uploads", params={"overwrite": "1"}, content=body, headers={"content-type": FORM_TYPE}
    )
    assert response.status_code == 201
    assert [f["created"] for f in response.json()["files"]] == [True, False]
    assert (files / name / "taken.txt").read_bytes() == b"2"


# -- limits, keys, disconnects -----------------------------------------------------------------


@pytest.fixture
def small_http(small: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=small.url, timeout=10.0, headers=headers) as client:
        yield client


def small_dir(small: ServerProcess) -> Path:
    return Path(small.env["SLUICEWAY_FILES_DIR"])


def test_uploads_need_the_publish_key(small: ServerProcess, name: str) -> None:
    response = httpx.put(f"{small.url}/files/{name}", content=b"x")
    assert_error(response, 401, "unauthorized")
    response = httpx.post(f"{small.url}/uploads", content=form([("f", name, b"x")]))
    assert_error(response, 401, "unauthorized")
    assert not (small_dir(small) / name).exists()


def test_upload_at_the_limit_is_accepted(small_http: httpx.Client, name: str) -> None:
    assert small_http.put(f"/files/{name}", content=b"x" * MiB).status_code == 201


def test_declared_length_over_the_limit_is_refused_before_the_body(
    small: ServerProcess, name: str
) -> None:
    lines = [
        f"PUT /files/{name} HTTP/1.1",
        f"Host: {HOST}",
        f"Authorization: Bearer {KEY}",
        f"Content-Length: {10 * MiB}",
    ]
    with socket.create_connection((HOST, small.port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())  # and not a byte of body
        answer = b""
        while not answer.endswith(b"}") and (chunk := sock.recv(65536)):  # the JSON's end
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b'"error":"upload_too_large"' in answer
    assert not (small_dir(small) / name).exists()


def test_streamed_body_over_the_limit_is_413_and_removed(
    small_http: httpx.Client, small: ServerProcess, name: str
) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(4):
            yield b"z" * (MiB // 2)

    assert_error(small_http.put(f"/files/{name}", content=chunks()), 413, "upload_too_large")
    body = form([("f", name, b"z" * (MiB + 1))])
    response = small_http.post("/uploads", content=body, headers={"content-type": FORM_TYPE})
    assert_error(response, 413, "upload_too_large")
    assert not (small_dir(small) / name).exists()
    assert not leftovers(small_dir(small))


@pytest.mark.parametrize("kind", ["put", "post"])
def test_disconnect_mid_upload_leaves_nothing(
    server: ServerProcess, files: Path, name: str, kind: str
) -> None:
    if kind == "put":
        start = f"PUT /files/{name}/gone.bin HTTP/1.1\r\n"
        prefix = b""
        content_type = "application/octet-stream"
    else:
        start = "POST /uploads HTTP/1.1\r\n"
        prefix = form([("path", None, name.encode())])[: -len(b"--XyZzY--\r\n")]
        prefix += (
            b'--XyZzY\r\nContent-Disposition: form-data; name="f"; filename="gone.bin"\r\n\r\n'
        )
        content_type = FORM_TYPE
    head = (
        f"{start}Host: {HOST}\r\nContent-Type: {content_type}\r\nContent-Length: {50 * MiB}\r\n\r\n"
    )
    sock = socket.create_connection((HOST, server.port), timeout=5)
    try:
        sock.sendall(head.encode() + prefix + os.urandom(3 * MiB))
        wait_until(lambda: leftovers(files / name), 5, "a temporary file")
    finally:
        sock.close()  # 47 MiB short
    # The temporary file goes, and so does the directory that was made for it.
    wait_until(lambda: not (files / name).exists(), 5, "the temporary file removed")
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# -- large transfers, constant memory ------------------------------------------------------------


def test_large_upload_keeps_server_memory_flat(
    server: ServerProcess, files: Path, name: str
) -> None:
    block = os.urandom(MiB)
    total = 200
    expected = hashlib.sha256()
    for _ in range(total):
        expected.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(total):
            yield block

    with PeakRSS(server) as rss, httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.put(
            f"/files/{name}.big", content=body(), headers={"content-length": str(total * MiB)}
        )
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == expected.hexdigest()
    assert response.json()["size"] == total * MiB
    assert (files / f"{name}.big").stat().st_size == total * MiB
    assert rss.growth_mib < 40, f"server RSS grew {rss.growth_mib:.0f} MiB for a 200 MiB upload"
    (files / f"{name}.big").unlink()


@pytest.fixture
def sparse(files: Path, name: str) -> Iterator[str]:
    """A 200 MiB file that is mostly a hole, with markers at known offsets."""
    path = files / f"{name}.sparse"
    with path.open("wb") as file:
        file.truncate(200 * MiB)
        for offset in (0, 100 * MiB, 200 * MiB - 8):
            file.seek(offset)
            file.write(b"MARKER!!")
    yield path.name
    path.unlink()


def test_large_download_keeps_server_memory_flat(server: ServerProcess, sparse: str) -> None:
    digest = hashlib.sha256()
    received = 0
    with (
        PeakRSS(server) as rss,
        httpx.Client(base_url=server.url, timeout=60) as client,
        client.stream("GET", f"/files/{sparse}", headers={"accept-encoding": "identity"}) as reply,
    ):
        assert reply.status_code == 200
        for chunk in reply.iter_raw(MiB):
            digest.update(chunk)
            received += len(chunk)
    assert received == 200 * MiB
    with (Path(server.env["SLUICEWAY_FILES_DIR"]) / sparse).open("rb") as file:
        assert digest.hexdigest() == hashlib.file_digest(file, "sha256").hexdigest()
    assert rss.growth_mib < 40, f"server RSS grew {rss.growth_mib:.0f} MiB for a 200 MiB download"

    middle = httpx.get(
        f"{server.url}/files/{sparse}", headers={"range": f"bytes={100 * MiB}-{100 * MiB + 7}"}
    )
    assert middle.status_code == 206 and middle.content == b"MARKER!!"


def test_download_stops_when_the_client_leaves(
    server: ServerProcess, files: Path, name: str
) -> None:
    # 64 GiB of hole: reading it all for nobody would take the server many seconds.
    path = files / f"{name}.huge"
    with path.open("wb") as file:
        file.truncate(64 * 1024 * MiB)

    def file_open() -> bool:
        return any(f.path == str(path.resolve()) for f in server.ps.open_files())

    sock = socket.create_connection((HOST, server.port), timeout=5)
    try:
        sock.sendall(f"GET /files/{path.name} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        wait_until(file_open, 5, "the server sending the file")  # and we read no more
    finally:
        sock.close()
    wait_until(lambda: not file_open(), 2, "the server closing the file")
    path.unlink()
