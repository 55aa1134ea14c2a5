"""What an application decides about its WebSocket endpoint: limits, permissions and hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from sluiceway.auth import Grants, TokenVerifier
from sluiceway.auth.resources import may_publish_topic, may_read_topic


@dataclass(slots=True)
class Client:
    """A connection as hooks see it."""

    id: str  # unique per connection
    user: str  # the token's ``sub``; "" for an anonymous connection
    claims: Mapping[str, Any]  # the connection token's claims ({} without a token)
    info: Any  # ``info`` from the token, shown in presence (``conn_info``)
    raw_headers: list[tuple[bytes, bytes]]  # as the ASGI server gave them
    #: What its connection token's ``mercure`` authorization details grant on
    #: ``/topics/{channel}`` (see :mod:`sluiceway.auth.resources`); anonymous grants without one.
    grants: Grants

    @property
    def headers(self) -> dict[str, str]:
        """The upgrade request's headers, lower-case names (built when asked: an idle
        connection does not keep a second copy)."""
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers}


#: ``on_connect(client, data)``: raise ReplyError/Disconnect to refuse; the value returned is
#: sent to the client as the connect result's ``data``.
OnConnect = Callable[[Client, Any], Awaitable[Any]]
#: ``on_subscribe(client, channel, data)``: raise ReplyError (103...) to refuse.
OnSubscribe = Callable[[Client, str, Any], Awaitable[None]]
#: ``on_publish(client, channel, data)`` returns the data to publish (validated, rewritten);
#: raise ReplyError to refuse.
OnPublish = Callable[[Client, str, Any], Awaitable[Any]]
#: ``on_rpc(client, method, data)`` returns the result's data (a JSON value, or bytes for a
#: Protobuf client); raise ReplyError (``codes.method_not_found()`` for an unknown method) or
#: Disconnect to refuse.
OnRpc = Callable[[Client, str, Any], Awaitable[Any]]
#: ``on_disconnect(client, code, reason)``.
OnDisconnect = Callable[[Client, int, str], Awaitable[None]]


@dataclass(slots=True)
class Hooks:
    on_connect: OnConnect | None = None
    on_subscribe: OnSubscribe | None = None
    on_publish: OnPublish | None = None
    on_disconnect: OnDisconnect | None = None
    #: Without it, ``rpc`` is answered 104 (method not found).  (Last: the fields before it
    #: keep their places for applications that pass them in order.)
    on_rpc: OnRpc | None = None


@dataclass(slots=True)
class CentrifugoOptions:
    """Limits and permissions of :class:`~sluiceway.centrifugo.CentrifugoEndpoint`.

    Permissions are those of the HTTP API (:func:`sluiceway.auth.resources.may_read_topic`),
    read from the connection token's ``authorization_details`` of type ``mercure`` on
    ``/topics/{channel}``: anyone may subscribe to ordinary channels while
    ``anonymous_subscribe`` is on, otherwise the token must grant ``subscribe`` on the
    channel; ``$name`` channels need a grant on them; ``name#u1,u2`` channels are limited to
    those users (or a grant naming the channel exactly). A subscription token for the channel
    (Centrifugo's) allows any of them. Internal topics (``sluiceway.*``) are no channels.
    Clients publish to channels matching ``publish_channels`` (fnmatch patterns), to those
    their token grants ``publish`` on, or to any when an ``on_publish`` hook is set (which
    then decides). History and presence are open to the channel's subscribers.
    """

    #: Checks connection and subscription tokens; without keys, tokens are refused.
    tokens: TokenVerifier = field(default_factory=TokenVerifier)
    #: Connect without a token (``user`` is then "").
    allow_anonymous: bool = True
    publish_channels: list[str] = field(default_factory=list)
    #: Seconds between the server's pings; a pong must come within ``pong_timeout``.
    ping_interval: float = 25.0
    pong_timeout: float = 8.0
    #: A connection that has not sent ``connect`` within this many seconds is closed (3502).
    connect_timeout: float = 10.0
    #: Largest frame a client may send (bytes); larger closes with 3501.
    max_frame_bytes: int = 65_536
    max_channels: int = 128
    #: Commands per second (a token bucket of ``command_burst``); over it: error 111, and
    #: disconnect 3013 once ``command_burst`` more commands were refused in a row.
    command_rate: float = 100.0
    command_burst: int = 200
    #: Largest frame the server sends: pushes queued together are joined up to this size.
    max_send_frame_bytes: int = 262_144
    #: How long presence entries live without being renewed (shared presence).
    presence_ttl: float = 60.0
    #: Channels (fnmatch patterns) whose joins and leaves are announced, through the hub, to
    #: the subscribers that ask for them (``join_leave`` on subscribe); each subscribe and
    #: unsubscribe there is one more hub publish.
    join_leave_channels: list[str] = field(default_factory=lambda: ["*"])
    #: Channels (fnmatch patterns) whose subscribers may ask for fossil deltas (``delta:
    #: "fossil"`` on subscribe): each publication is then sent as its difference from the
    #: previous one. A delta is made once per publication and format, only when asked for.
    delta_channels: list[str] = field(default_factory=lambda: ["*"])
    hooks: Hooks = field(default_factory=Hooks)
    #: Seconds a hook (on_connect, on_subscribe, on_publish, on_rpc) may take; past it the
    #: command is answered 100 (internal error, temporary) and the hook is cancelled.
    hook_timeout: float = 10.0
    #: Subscribe to ordinary channels without a grant.
    anonymous_subscribe: bool = True
    #: The hub's URL: relative URL patterns in grants resolve against it.
    hub_url: str | None = None
    anonymous_grants: Grants = field(init=False)

    def __post_init__(self) -> None:
        # One object shared by every connection without a token.
        self.anonymous_grants = Grants.anonymous(subscribe=self.anonymous_subscribe)

    def grants_of(self, claims: Mapping[str, Any]) -> Grants:
        """A verified connection token's grants; raises :class:`AuthError` for bad details."""
        return Grants.from_claims(
            claims,
            hub_url=self.hub_url,
            legacy_claims=True,
            anonymous_subscribe=self.anonymous_subscribe,
        )

    def may_subscribe(self, client: Client, channel: str) -> bool:
        """Without a subscription token: the rules of every path."""
        return may_read_topic(client.grants, channel)

    def allows_delta(self, channel: str) -> bool:
        return any(fnmatchcase(channel, pattern) for pattern in self.delta_channels)

    def announces_join_leave(self, channel: str) -> bool:
        return any(fnmatchcase(channel, pattern) for pattern in self.join_leave_channels)

    def may_publish(self, client: Client, channel: str) -> bool:
        return (
            self.hooks.on_publish is not None
            or any(fnmatchcase(channel, pattern) for pattern in self.publish_channels)
            or may_publish_topic(client.grants, channel)
        )
