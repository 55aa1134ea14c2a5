"""Settings of ``sluiceway serve``: defaults that run with nothing configured, overridable by
``SLUICEWAY_*`` environment variables and by command-line options (which win)."""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluiceway.auth import TokenVerifier
from sluiceway.auth.grants import ACCESS_TOKEN_COOKIE
from sluiceway.centrifugo import CentrifugoOptions
from sluiceway.gateway.limits import GenerationLimits
from sluiceway.hub import HubConfig
from sluiceway.server.admission import AdmissionPolicy, split_host
from sluiceway.server.admission import is_loopback_name as is_loopback
from sluiceway.transfer.proxy import ProxyRefused, Target

MiB = 1024 * 1024

#: The proxies believed when ``forwarded_allow_ips`` is unset (uvicorn's default too).
LOOPBACK_PROXIES = ("127.0.0.1", "::1")


#: ``llm_max_concurrent`` when unset, by provider (see there).
DEFAULT_LLM_CONCURRENCY = {"local": 64, "openai": 1024, "anthropic": 1024}


class Settings(BaseSettings):
    """Every setting, with its environment variable ``SLUICEWAY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SLUICEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"
    backlog: int = Field(2048, ge=1)
    #: ``Authorization: Bearer <key>`` with this key may do everything (publish, read, start
    #: generations and jobs, upload); unset: no such key.
    publish_key: SecretStr | None = None
    #: Read without a token: topics, history, downloads, exports, the proxy, WebSocket
    #: channels, Mercure's public updates (and runs started without a ``sub``, where anonymous
    #: publishing is on too). Off: each read needs a ``subscribe`` grant.
    anonymous_subscribe: bool = True
    #: Write without a token: publish, start generations and jobs, upload, publish to Mercure.
    #: Unset: only while the server is not reachable from elsewhere (:attr:`exposure`) and has
    #: no publish key, and only for clients that did not come through a proxy (development
    #: stays key-free; what a proxy forwards may come from anywhere).
    anonymous_publish: bool | None = None
    #: Host names answered besides loopback ones while bound to loopback (and the only ones,
    #: with loopback names, when set on another address): ``example.com``, ``example.com:8443``,
    #: ``.example.com`` (and its subdomains), or ``*``. Other ``Host`` values get 421, which
    #: stops DNS rebinding from making a hostile page same-origin with this server.
    allowed_hosts: list[str] = Field(default_factory=list)
    #: Peers whose ``X-Forwarded-For``/``X-Forwarded-Proto`` are believed (addresses, networks
    #: such as ``10.0.0.0/8``, or ``*``): the proxy in front. Their requests are logged (and
    #: seen by the app) with the forwarded client's address. Unset: loopback (``127.0.0.1``,
    #: ``::1``). Set: a proxy fronts this server, which is then reachable from elsewhere.
    forwarded_allow_ips: list[str] | None = None
    #: ``/metrics`` and the counts of ``/healthz`` for anyone. Unset: while reading needs no
    #: token. Otherwise they need a ``subscribe`` grant on ``/metrics`` (``/healthz`` still
    #: answers its status to anyone, for load balancers).
    status_public: bool | None = None
    #: Largest request body accepted (413 beyond).
    max_body_bytes: int = Field(MiB, ge=1)
    #: Seconds of silence before a keep-alive comment.
    ping_interval: float = Field(15.0, gt=0)
    #: ``retry:`` (ms) sent at the start of every stream; unset: the client's default.
    retry_ms: int | None = Field(None, ge=0)
    history_size: int = Field(1000, ge=1)
    history_ttl: float = Field(3600.0, gt=0)
    history_bytes: int = Field(16 * MiB, ge=1)
    buffer_events: int = Field(1000, ge=1)
    buffer_bytes: int = Field(MiB, ge=1)
    write_timeout: float = Field(30.0, gt=0)
    max_topics: int = Field(100_000, ge=1)
    #: Topic patterns (fnmatch) whose slow subscribers skip to the latest event.
    keep_latest_topics: list[str] = Field(default_factory=list)
    #: Topic patterns (fnmatch) whose subscribers may ask for fossil deltas: SSE streams with
    #: ``?delta=fossil``, WebSocket subscriptions with ``delta: "fossil"``. Elsewhere they
    #: are sent whole events.
    delta_topics: list[str] = Field(default_factory=lambda: ["*"])
    #: Most topics one stream (``GET /events``) may follow.
    max_topics_per_stream: int = Field(64, ge=1)
    #: How long shutdown waits for streams to flush before closing them.
    shutdown_timeout: float = Field(5.0, ge=0)
    #: Write hub streams straight to the socket (sluiceway.server.native); false: pure ASGI.
    native_streams: bool = True
    #: Where history lives: ``memory`` (this process) or a Redis URL shared by processes.
    backend: str = "memory"
    #: Processes serving the port (SO_REUSEPORT); more than one needs a shared backend.
    workers: int = Field(1, ge=1, le=64)

    #: Directory served by ``GET /files/...`` and written by uploads (created when missing).
    files_dir: Path = Path("files")
    #: Largest upload (413 beyond; the partial file is removed).
    max_upload_bytes: int = Field(1024 * MiB, ge=1)
    #: Seconds an upload's body may go without a byte arriving: then it is dropped (408
    #: ``upload_timeout``, the connection closed, the partial file removed). An idle bound: a
    #: slow upload that keeps coming takes as long as it needs.
    upload_read_timeout: float = Field(30.0, gt=0)
    #: Database for ``/exports`` (any SQLAlchemy async URL).
    database_url: str = "sqlite+aiosqlite:///sluiceway.db"
    #: Tables ``/exports`` may read; nothing else in the database is exposed.
    export_tables: list[str] = Field(default_factory=lambda: ["demo"])
    #: URL prefixes ``/proxy`` may forward to (none by default: the proxy is off).
    proxy_allow: list[str] = Field(default_factory=list)
    #: Jobs running at once (429 beyond).
    max_jobs: int = Field(4, ge=1)
    #: Compress responses (gzip; brotli when installed) for clients that accept it.
    compression: bool = True

    #: Where generations come from: the embedded local model, or an API.
    llm_provider: Literal["local", "openai", "anthropic"] = "local"
    #: The API's base URL (OpenAI-compatible: ``.../v1``); unset: the provider's own.
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    #: The model used when a request names none; unset: the provider's default.
    llm_model: str | None = None
    #: Generations going at once; one more is a 429. Unset: what the provider takes — the
    #: local model answers one at a time and queues the rest (64 waiting at most, minutes of
    #: work on a CPU); a remote API serves hundreds at once (1024), bounded by its own limits.
    llm_max_concurrent: int | None = Field(None, ge=1)
    llm_max_tokens: int = Field(4096, ge=1)
    llm_max_duration: float = Field(300.0, gt=0)
    llm_first_token_timeout: float = Field(60.0, gt=0)
    #: Seconds with no client attached before ``llm_on_abandon`` applies.
    llm_abandon_after: float = Field(30.0, gt=0)
    llm_on_abandon: Literal["cancel", "finish"] = "cancel"
    #: Seconds a finished generation stays replayable.
    llm_retention: float = Field(600.0, gt=0)
    #: Where the Vercel AI SDK's chat endpoints live (``<prefix>/chat``).
    chat_api_prefix: str = Field("/api", pattern=r"^(/[A-Za-z0-9._~-]+)*$")

    #: Serve the web UI at ``/`` and ``sluiceway.js`` at ``/static/sluiceway.js``.
    web_ui: bool = True

    #: Serve Centrifugo's client protocol at ``/connection/websocket``.
    ws_enabled: bool = True
    #: Channel patterns (fnmatch) WebSocket clients may publish to (none by default).
    ws_publish_channels: list[str] = Field(default_factory=list)
    #: Accept WebSocket connections without a connection token.
    ws_allow_anonymous: bool = True
    ws_ping_interval: float = Field(25.0, gt=0)
    ws_pong_timeout: float = Field(8.0, gt=0)
    #: Seconds a new WebSocket connection has to send ``connect`` (3502 after).
    ws_connect_timeout: float = Field(10.0, gt=0)
    #: Seconds a presence entry outlives its process (shared presence, Redis).
    ws_presence_ttl: float = Field(60.0, ge=1)
    #: The application's URL for clients' ``rpc`` commands (Centrifugo's RPC proxy format,
    #: see sluiceway.centrifugo.proxy); without it ``rpc`` answers 104.
    ws_rpc_proxy_url: AnyHttpUrl | None = None
    #: The application's URL that validates or rewrites what clients publish (it then
    #: decides where they may publish, as Centrifugo's publish proxy does).
    ws_publish_proxy_url: AnyHttpUrl | None = None
    #: Seconds a hook (the proxy's answer) may take; past it the command is answered 100.
    ws_hook_timeout: float = Field(10.0, gt=0)
    #: Channel patterns (fnmatch) whose joins and leaves are announced to the subscribers that
    #: ask (``join_leave`` on subscribe): one hub publish per subscribe and unsubscribe there.
    ws_join_leave_channels: list[str] = Field(default_factory=lambda: ["*"])
    #: Largest frame a WebSocket client may send.
    ws_max_frame_bytes: int = Field(65_536, ge=1024)
    ws_max_channels: int = Field(128, ge=1)
    #: Commands per second per connection (error 111 beyond; 3013 when it persists).
    ws_command_rate: float = Field(100.0, gt=0)
    ws_command_burst: int = Field(200, ge=1)

    #: Serve the Mercure protocol at ``/.well-known/mercure``.
    mercure_enabled: bool = True
    #: The hub's public URL (relative topics and URL patterns resolve against it); unset:
    #: ``http://<host>:<port>/.well-known/mercure``.
    mercure_public_url: str | None = None

    #: Origins (e.g. ``["https://app.example.com"]``) allowed to call the API from a browser;
    #: none by default (CORS off).
    cors_allow_origins: list[str] = Field(default_factory=list)
    #: Let those origins send cookies (the ``mercureAccessToken`` cookie) and Authorization.
    cors_allow_credentials: bool = False

    #: JWT verification: an HMAC secret (HS256) and/or a PEM public key (RS256 or ES256).
    token_hmac_secret: SecretStr | None = None
    token_public_key: str | None = None
    #: When set, a token must name it in ``aud``. Unset, a token may have no ``aud``, but
    #: one that has it must name this server (its Mercure hub URL or its origin).
    token_audience: str | None = None
    token_issuer: str | None = None
    #: The header's ``typ`` every token must have (``at+jwt`` for the Mercure draft's access
    #: tokens). Unset: absent, ``JWT`` or ``at+jwt``.
    token_type: str | None = None
    #: Refuse tokens without ``exp`` (a stolen token without one works forever).
    token_require_exp: bool = True
    #: Refuse tokens that expire more than this many seconds from now.
    token_max_lifetime: float = Field(7 * 86400.0, gt=0)
    #: The cookie a browser's token comes in (``mercureAccessToken`` and
    #: ``mercureAuthorization``, earlier revisions' names, are read too).
    token_cookie: str = Field(ACCESS_TOKEN_COOKIE, pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
    #: Seconds of clock skew tolerated on ``exp`` / ``nbf``.
    token_leeway: float = Field(5.0, ge=0)

    @field_validator("cors_allow_credentials")
    @classmethod
    def _credentials_need_origins(cls, value: bool, info: Any) -> bool:
        if value and "*" in (info.data.get("cors_allow_origins") or []):
            raise ValueError("cors_allow_credentials needs explicit origins, not '*'")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or ():
            if entry != "*":
                try:
                    ipaddress.ip_network(entry)  # as uvicorn reads it: host bits zero
                except ValueError:
                    raise ValueError(
                        f"forwarded_allow_ips {entry[:100]!r}: expected an IP address, a network"
                        " such as 10.0.0.0/8, or '*'"
                    ) from None
        return value

    @field_validator("proxy_allow")
    @classmethod
    def _proxy_prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            try:
                Target.parse(prefix)
            except ProxyRefused as exc:
                raise ValueError(f"proxy_allow {prefix[:100]!r}: {exc.detail}") from None
        return value

    @field_validator("mercure_public_url")
    @classmethod
    def _hub_path(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("the hub's public URL must be an absolute http(s) URL")
            if parts.path != "/.well-known/mercure":
                raise ValueError("the hub's public URL must end in /.well-known/mercure")
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value == "memory":
            return value
        if value.startswith(("redis+cluster://", "rediss+cluster://")):
            from sluiceway.hub.redis_backend import cluster_seeds

            cluster_seeds(value)  # raises ValueError naming the bad address
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "expected 'memory', a Redis URL such as redis://127.0.0.1:6379/0, or a Redis "
                "Cluster's nodes such as redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
            )
        return value

    @property
    def shared_backend(self) -> bool:
        return self.backend != "memory"

    def generation_limits(self) -> GenerationLimits:
        return GenerationLimits(
            max_concurrent=self.llm_max_concurrent or DEFAULT_LLM_CONCURRENCY[self.llm_provider],
            max_tokens=self.llm_max_tokens,
            max_duration=self.llm_max_duration,
            first_token_timeout=self.llm_first_token_timeout,
            abandon_after=self.llm_abandon_after,
            on_abandon=self.llm_on_abandon,
            retention=self.llm_retention,
        )

    def hub_config(self) -> HubConfig:
        return HubConfig(
            history_size=self.history_size,
            history_ttl=self.history_ttl,
            history_bytes=self.history_bytes,
            buffer_events=self.buffer_events,
            buffer_bytes=self.buffer_bytes,
            write_timeout=self.write_timeout,
            ping_interval=self.ping_interval,
            max_topics=self.max_topics,
            keep_latest_topics=tuple(self.keep_latest_topics),
        )

    def allows_delta(self, topic: str) -> bool:
        """Whether subscribers of ``topic`` may be sent deltas (``delta_topics``)."""
        return any(fnmatchcase(topic, pattern) for pattern in self.delta_topics)

    def token_verifier(self) -> TokenVerifier:
        secret = self.token_hmac_secret.get_secret_value() if self.token_hmac_secret else None
        hub_url = self.mercure_hub_url
        origin = hub_url[: hub_url.index("/", hub_url.index("//") + 2)]
        return TokenVerifier(
            hmac_secret=secret,
            public_key_pem=self.token_public_key,
            audience=self.token_audience,
            identities=(hub_url, origin, origin + "/"),
            issuer=self.token_issuer,
            leeway=self.token_leeway,
            token_type=self.token_type,
            require_exp=self.token_require_exp,
            max_lifetime=self.token_max_lifetime,
        )

    def admission_policy(self) -> AdmissionPolicy:
        key = self.publish_key.get_secret_value() if self.publish_key else None
        return AdmissionPolicy(
            verifier=self.token_verifier(),
            publish_key=key,
            hub_url=self.mercure_hub_url,
            token_cookie=self.token_cookie,
            anonymous_subscribe=self.anonymous_subscribe,
            anonymous_publish=self.anonymous_publish_allowed,
            anonymous_publish_via_proxy=self.anonymous_publish_via_proxy,
            loopback_only=is_loopback(self.host),
            allowed_hosts=tuple(self.allowed_hosts),
            cors_origins=tuple(self.cors_allow_origins),
            status_public=self.status_is_public,
        )

    @property
    def status_is_public(self) -> bool:
        return self.anonymous_subscribe if self.status_public is None else self.status_public

    def centrifugo_options(self) -> CentrifugoOptions:
        return CentrifugoOptions(
            tokens=self.token_verifier(),
            allow_anonymous=self.ws_allow_anonymous,
            publish_channels=list(self.ws_publish_channels),
            ping_interval=self.ws_ping_interval,
            pong_timeout=self.ws_pong_timeout,
            connect_timeout=self.ws_connect_timeout,
            presence_ttl=self.ws_presence_ttl,
            join_leave_channels=list(self.ws_join_leave_channels),
            delta_channels=list(self.delta_topics),
            hook_timeout=self.ws_hook_timeout,
            max_frame_bytes=self.ws_max_frame_bytes,
            max_channels=self.ws_max_channels,
            command_rate=self.ws_command_rate,
            command_burst=self.ws_command_burst,
            anonymous_subscribe=self.anonymous_subscribe,
            hub_url=self.mercure_hub_url,
        )

    @property
    def mercure_hub_url(self) -> str:
        return self.mercure_public_url or f"http://{self.host}:{self.port}/.well-known/mercure"

    @property
    def trusted_proxies(self) -> list[str]:
        """The peers whose forwarded client addresses are believed."""
        if self.forwarded_allow_ips is None:
            return list(LOOPBACK_PROXIES)
        return list(self.forwarded_allow_ips)

    @property
    def exposure(self) -> str | None:
        """Why clients elsewhere can reach this server, or None while only this machine can:
        bound beyond loopback; answering host names other than loopback ones
        (``allowed_hosts``: whoever resolves them reaches it, through a proxy or not); or
        told that a proxy fronts it (``forwarded_allow_ips`` set). A server bound to
        127.0.0.1 behind nginx is as reachable as the proxy is."""
        if not is_loopback(self.host):
            return f"listening on {self.host}:{self.port}"
        names = [host for host in self.allowed_hosts if not is_loopback(split_host(host)[0])]
        if names:
            return f"answering {', '.join(names)} (allowed_hosts)"
        if self.forwarded_allow_ips:
            return f"behind a proxy at {', '.join(self.forwarded_allow_ips)} (forwarded_allow_ips)"
        return None

    @property
    def anonymous_publish_allowed(self) -> bool:
        if self.anonymous_publish is not None:
            return self.anonymous_publish
        return self.publish_key is None and self.exposure is None

    @property
    def anonymous_publish_via_proxy(self) -> bool:
        """Anonymous publishing for a request that came through a proxy (it says whom it
        forwards for): only when asked for (``anonymous_publish=true``). A local proxy that
        does not pass ``Host`` on leaves no other trace of the world behind it."""
        return self.anonymous_publish is True

    @property
    def exposed_without_key(self) -> bool:
        """Reachable from elsewhere with anyone allowed to publish."""
        return self.anonymous_publish is True and self.exposure is not None

    @property
    def exposed_reads(self) -> bool:
        """Reachable from elsewhere with anyone allowed to read."""
        return self.anonymous_subscribe and self.exposure is not None

    @property
    def nobody_may_publish(self) -> bool:
        """No anonymous publishing, no publish key, and no key to verify tokens with."""
        return (
            not self.anonymous_publish_allowed
            and self.publish_key is None
            and not self.token_verifier().configured
        )
