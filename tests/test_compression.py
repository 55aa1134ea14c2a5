"""Compression: gzip (brotli when preferred) for clients that accept it, flushed per event on
event streams, never for what must not be compressed."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import brotli
import httpx
import pytest
from conftest import StartServer
from serverproc import ServerProcess

from sluiceway.transfer.compression import choose_encoding, compressible

GZIP = {"Accept-Encoding": "gzip"}


@pytest.fixture(scope="module")
def asgi_server() -> Iterator[ServerProcess]:
    """Hub streams through ASGI (the native path writes shared, uncompressed bytes)."""
    server = ServerProcess(env={"SLUICEWAY_NATIVE_STREAMS": "false"}).start()
    yield server
    server.stop()


def test_negotiation() -> None:
    assert choose_encoding("") is None
    assert choose_encoding("identity") is None
    assert choose_encoding("gzip, deflate, br, zstd") == "gzip"  # gzip wins ties
    assert choose_encoding("br;q=1.0, gzip;q=0.5") == "br"
    assert choose_encoding("*") == "gzip"
    assert choose_encoding("gzip;q=0, *;q=0") is None
    assert compressible("application/json") and compressible("text/event-stream")
    assert compressible("image/svg+xml")
    assert not compressible("image/png") and not compressible("application/zip")


def test_each_event_arrives_decodable_as_it_is_sent(asgi_server: ServerProcess) -> None:
    url = f"{asgi_server.url}/topics/gz"
    decoder = zlib.decompressobj(31)
    with httpx.Client(timeout=10) as http, http.stream("GET", url, headers=GZIP) as response:
        assert response.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in response.headers["vary"].lower()
        chunks = response.iter_raw()
        for n in range(3):
            httpx.post(url, json={"data": f"event {n}"}).raise_for_status()
            text = b""
            while f"data: event {n}\n".encode() not in text:  # no later event is needed
                text += decoder.decompress(next(chunks))
            assert text.endswith(b"\n\n")


def test_brotli_when_the_client_prefers_it(asgi_server: ServerProcess) -> None:
    body = {"data": "x" * 5000}
    httpx.post(f"{asgi_server.url}/topics/br", json=body).raise_for_status()
    answer = httpx.get(
        f"{asgi_server.url}/topics/br/history",
        headers={"Accept-Encoding": "br;q=1, gzip;q=0.5"},
    )
    assert answer.headers["content-encoding"] == "br"
    assert answer.json()["events"][0]["data"] == "x" * 5000  # httpx decoded it


def test_small_bodies_and_identity_are_not_compressed(asgi_server: ServerProcess) -> None:
    small = httpx.get(f"{asgi_server.url}/healthz", headers=GZIP)
    assert "content-encoding" not in small.headers
    plain = httpx.get(
        f"{asgi_server.url}/topics/br/history", headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    large = httpx.get(f"{asgi_server.url}/topics/br/history", headers=GZIP)
    assert large.headers["content-encoding"] == "gzip"
    assert int(large.headers.get("content-length", "0") or 0) < 5000


def test_compression_can_be_turned_off(start_server: StartServer) -> None:
    server = start_server(env={"SLUICEWAY_COMPRESSION": "false"})
    httpx.post(f"{server.url}/topics/t", json={"data": "y" * 5000}).raise_for_status()
    answer = httpx.get(f"{server.url}/topics/t/history", headers=GZIP)
    assert "content-encoding" not in answer.headers


def test_the_native_path_sends_uncompressed_shared_bytes(default_server: ServerProcess) -> None:
    url = f"{default_server.url}/topics/native-gz"
    with httpx.Client(timeout=10) as http, http.stream("GET", url, headers=GZIP) as response:
        assert "content-encoding" not in response.headers
        raw = response.iter_raw()
        assert b"event: sluiceway.position\n" in next(raw)  # where it starts: plain too
        httpx.post(url, json={"data": "plain"}).raise_for_status()
        assert b"data: plain" in next(raw)


def test_brotli_stream_decodes_per_event(asgi_server: ServerProcess) -> None:
    url = f"{asgi_server.url}/topics/brs"
    decoder = brotli.Decompressor()
    headers = {"Accept-Encoding": "br"}
    with httpx.Client(timeout=10) as http, http.stream("GET", url, headers=headers) as response:
        assert response.headers["content-encoding"] == "br"
        chunks = response.iter_raw()
        httpx.post(url, json={"data": "hello"}).raise_for_status()
        text = b""
        while b"data: hello\n" not in text:
            text += decoder.process(next(chunks))


def test_files_gzip_with_a_weak_etag_but_never_a_range(
    start_server: StartServer, tmp_path: object
) -> None:
    server = start_server(env={"SLUICEWAY_FILES_DIR": str(tmp_path)})
    text = ("a line of text\n" * 2000).encode()
    httpx.put(f"{server.url}/files/notes.txt", content=text).raise_for_status()
    whole = httpx.get(f"{server.url}/files/notes.txt", headers=GZIP)
    assert whole.headers["content-encoding"] == "gzip" and whole.content == text
    assert whole.headers["etag"].startswith('W/"')  # other bytes than the strong validator's
    again = httpx.get(
        f"{server.url}/files/notes.txt",
        headers={**GZIP, "If-None-Match": whole.headers["etag"]},
    )
    assert again.status_code == 304
    part = httpx.get(f"{server.url}/files/notes.txt", headers={**GZIP, "Range": "bytes=0-99"})
    assert part.status_code == 206 and "content-encoding" not in part.headers
    assert part.content == text[:100]
