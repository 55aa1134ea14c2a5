"""CORS: off by default; with allowed origins, preflights are answered and streams (native path
included) carry the headers a browser needs to read them, cookies too when credentials are on."""

from __future__ import annotations

import httpx
from conftest import StartServer

ORIGIN = "https://app.example.com"


def test_cors_is_off_by_default(start_server: StartServer) -> None:
    server = start_server()
    response = httpx.get(f"{server.url}/topics/x/history", headers={"origin": ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    # And a write from that origin is refused (the browser would send it without asking).
    response = httpx.post(f"{server.url}/topics/x", json={"data": 1}, headers={"origin": ORIGIN})
    assert response.status_code == 403
    assert response.json()["error"] == "cross_origin"


def test_allowed_origins_get_cors_headers_on_streams_and_preflights(
    start_server: StartServer,
) -> None:
    server = start_server(
        env={
            "SLUICEWAY_CORS_ALLOW_ORIGINS": f'["{ORIGIN}"]',
            "SLUICEWAY_CORS_ALLOW_CREDENTIALS": "true",
        }
    )
    preflight = httpx.options(
        f"{server.url}/topics/news",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "GET",
            "access-control-request-headers": "last-event-id, authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["access-control-allow-credentials"] == "true"
    refused = httpx.options(
        f"{server.url}/topics/news",
        headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
    )
    assert refused.status_code == 400
    httpx.post(f"{server.url}/topics/news", json={"data": "hello"})
    with httpx.stream(
        "GET", f"{server.url}/events?topic=news", headers={"origin": ORIGIN}, timeout=5
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["access-control-allow-origin"] == ORIGIN
        assert stream.headers["access-control-allow-credentials"] == "true"
        assert "last-event-id" in stream.headers["access-control-expose-headers"]
