"""``StreamClient``, the providers' HTTP/1.1 client, against raw asyncio servers on loopback
ports that answer exactly as a test scripts them (framing, timing, TLS, failures)."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from serverproc import HOST

from sluiceway.llm.providers.stream_client import (
    ConnectError,
    ReadTimeout,
    RemoteProtocolError,
    StreamClient,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """Counts connections and requests; ``handler`` answers each request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # a connection was closed by the client
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            writer.close()


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server.serve, HOST, 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


def url(server: Server, scheme: str = "http") -> str:
    return f"{scheme}://{HOST}:{server.port}/v1/chat/completions"


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(HEAD + chunked(b"data: 1\n\n", b"data: 2\n\n"))
    await writer.drain()


async def read_all(client: StreamClient, address: str) -> tuple[int, bytes]:
    async with client.post(address, b'{"q": 1}', {"authorization": "Bearer k"}) as response:
        body = b"".join([piece async for piece in response.pieces()])
        return response.status, body


def client(read_timeout: float = 5.0) -> StreamClient:
    return StreamClient(connect_timeout=2.0, read_timeout=read_timeout)


async def test_a_chunked_stream_then_the_same_connection_again() -> None:
    async with serving(sse) as server:
        c = client()
        assert await read_all(c, url(server)) == (200, b"data: 1\n\ndata: 2\n\n")
        assert await read_all(c, url(server)) == (200, b"data: 1\n\ndata: 2\n\n")
        await c.aclose()
    assert server.connections == 1  # kept alive and reused
    request = server.requests[0]
    assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in request and b"\r\nauthorization: Bearer k\r\n" in request
    assert request.endswith(b'\r\ncontent-length: 8\r\n\r\n{"q": 1}')


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end", b"to the end"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%b"
            % (len(gzip.compress(b"zipped")), gzip.compress(b"zipped")),
            b"zipped",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", b"ok"),
    ],
    ids=["content-length", "until-close", "gzip", "interim-100"],
)
async def test_every_framing_of_a_body(answer: bytes, body: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()
        if b"connection: close" in answer:
            writer.close()

    async with serving(handler) as server:
        c = client()
        assert await read_all(c, url(server)) == (200, body)
        await c.aclose()


async def test_an_error_status_and_its_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"error": {"message": "slow down"}}'
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: %d\r\n\r\n%b"
            % (len(body), body)
        )

    async with serving(handler) as server:
        c = client()
        async with c.post(url(server), b"{}", {}) as response:
            assert (response.status, response.reason) == (429, "Too Many Requests")
            assert response.headers["retry-after"] == "3"
            assert await response.read(1000) == b'{"error": {"message": "slow down"}}'
        await c.aclose()


async def test_leaving_mid_stream_closes_the_connection_at_once() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        while True:
            writer.write(b"9\r\ndata: x\n\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with serving(endless) as server:
        c = client()
        async with c.post(url(server), b"{}", {}) as response:
            async for _ in response.pieces():
                break
        async with asyncio.timeout(1):
            await server.closed.wait()  # the server saw the client leave
        await c.aclose()


async def test_a_silent_server_is_a_read_timeout_before_and_after_the_head() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"9\r\ndata: x\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(10)

    for handler in (silent, stalls):
        async with serving(handler) as server:
            c = client(read_timeout=0.3)
            with pytest.raises(ReadTimeout):
                async with asyncio.timeout(3):
                    await read_all(c, url(server))
            await c.aclose()


async def test_connect_failures_and_broken_http() -> None:
    async with serving(sse) as server:
        port = server.port
    with pytest.raises(ConnectError):
        await read_all(client(), f"http://{HOST}:{port}/")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"9\r\ndata: x\n\n\r\n")
        await writer.drain()
        writer.transport.abort()

    for handler in (garbage, cut):
        async with serving(handler) as server:
            with pytest.raises(RemoteProtocolError):
                await read_all(client(), url(server))


async def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # keep-alive promised by HTTP/1.1, then broken

    async with serving(once) as server:
        c = client()
        assert await read_all(c, url(server)) == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await read_all(c, url(server)) == (200, b"ok")
        await c.aclose()
    assert server.connections == 2


async def test_a_reader_that_falls_behind_stops_the_socket_being_read() -> None:
    sent = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        piece = b"x" * 65536
        for _ in range(200):  # 13 MiB: far more than the client buffers
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            try:
                async with asyncio.timeout(0.5):
                    await writer.drain()
            except TimeoutError:
                sent.set()  # the client stopped reading: the socket is full
                await asyncio.sleep(10)
        writer.write(b"0\r\n\r\n")

    async with serving(flood) as server:
        c = client()
        async with c.post(url(server), b"{}", {}) as response:
            pieces = response.pieces()
            await anext(pieces)
            async with asyncio.timeout(5):
                await sent.wait()
        await c.aclose()


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the CA file that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluiceway test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, cert_file


async def test_tls_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server_context, ca = self_signed(tmp_path)
    async with serving(sse, tls=server_context) as server:
        with pytest.raises(ConnectError):  # certifi's CAs do not know this certificate
            await read_all(client(), url(server, "https"))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # as httpx and OpenSSL read it
        assert await read_all(client(), url(server, "https")) == (200, b"data: 1\n\ndata: 2\n\n")


async def test_no_header_can_inject_lines() -> None:
    with pytest.raises(ValueError, match="line break"):
        await read_all_with(client(), {"x-evil": "a\r\nhost: b"})


async def read_all_with(c: StreamClient, headers: dict[str, str]) -> None:
    async with c.post("http://127.0.0.1:9/", b"", headers):
        pass
