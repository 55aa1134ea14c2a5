from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class Error(_message.Message):
    __slots__ = ("code", "message", "temporary")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TEMPORARY_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    temporary: bool
    def __init__(
        self, code: int | None = ..., message: str | None = ..., temporary: bool = ...
    ) -> None: ...

class EmulationRequest(_message.Message):
    __slots__ = ("data", "node", "session")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    node: str
    session: str
    data: bytes
    def __init__(
        self, node: str | None = ..., session: str | None = ..., data: bytes | None = ...
    ) -> None: ...

class Command(_message.Message):
    __slots__ = (
        "connect",
        "history",
        "id",
        "ping",
        "presence",
        "presence_stats",
        "publish",
        "refresh",
        "rpc",
        "send",
        "sub_refresh",
        "subscribe",
        "unsubscribe",
    )
    ID_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_STATS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    SUB_REFRESH_FIELD_NUMBER: _ClassVar[int]
    id: int
    connect: ConnectRequest
    subscribe: SubscribeRequest
    unsubscribe: UnsubscribeRequest
    publish: PublishRequest
    presence: PresenceRequest
    presence_stats: PresenceStatsRequest
    history: HistoryRequest
    ping: PingRequest
    send: SendRequest
    rpc: RPCRequest
    refresh: RefreshRequest
    sub_refresh: SubRefreshRequest
    def __init__(
        self,
        id: int | None = ...,
        connect: ConnectRequest | _Mapping | None = ...,
        subscribe: SubscribeRequest | _Mapping | None = ...,
        unsubscribe: UnsubscribeRequest | _Mapping | None = ...,
        publish: PublishRequest | _Mapping | None = ...,
        presence: PresenceRequest | _Mapping | None = ...,
        presence_stats: PresenceStatsRequest | _Mapping | None = ...,
        history: HistoryRequest | _Mapping | None = ...,
        ping: PingRequest | _Mapping | None = ...,
        send: SendRequest | _Mapping | None = ...,
        rpc: RPCRequest | _Mapping | None = ...,
        refresh: RefreshRequest | _Mapping | None = ...,
        sub_refresh: SubRefreshRequest | _Mapping | None = ...,
    ) -> None: ...

class Reply(_message.Message):
    __slots__ = (
        "connect",
        "error",
        "history",
        "id",
        "ping",
        "presence",
        "presence_stats",
        "publish",
        "push",
        "refresh",
        "rpc",
        "sub_refresh",
        "subscribe",
        "unsubscribe",
    )
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_STATS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    SUB_REFRESH_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: Error
    push: Push
    connect: ConnectResult
    subscribe: SubscribeResult
    unsubscribe: UnsubscribeResult
    publish: PublishResult
    presence: PresenceResult
    presence_stats: PresenceStatsResult
    history: HistoryResult
    ping: PingResult
    rpc: RPCResult
    refresh: RefreshResult
    sub_refresh: SubRefreshResult
    def __init__(
        self,
        id: int | None = ...,
        error: Error | _Mapping | None = ...,
        push: Push | _Mapping | None = ...,
        connect: ConnectResult | _Mapping | None = ...,
        subscribe: SubscribeResult | _Mapping | None = ...,
        unsubscribe: UnsubscribeResult | _Mapping | None = ...,
        publish: PublishResult | _Mapping | None = ...,
        presence: PresenceResult | _Mapping | None = ...,
        presence_stats: PresenceStatsResult | _Mapping | None = ...,
        history: HistoryResult | _Mapping | None = ...,
        ping: PingResult | _Mapping | None = ...,
        rpc: RPCResult | _Mapping | None = ...,
        refresh: RefreshResult | _Mapping | None = ...,
        sub_refresh: SubRefreshResult | _Mapping | None = ...,
    ) -> None: ...

class Push(_message.Message):
    __slots__ = (
        "channel",
        "connect",
        "disconnect",
        "id",
        "join",
        "leave",
        "message",
        "pub",
        "refresh",
        "subscribe",
        "unsubscribe",
    )
    ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PUB_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    id: int
    channel: str
    pub: Publication
    join: Join
    leave: Leave
    unsubscribe: Unsubscribe
    message: Message
    subscribe: Subscribe
    connect: Connect
    disconnect: Disconnect
    refresh: Refresh
    def __init__(
        self,
        id: int | None = ...,
        channel: str | None = ...,
        pub: Publication | _Mapping | None = ...,
        join: Join | _Mapping | None = ...,
        leave: Leave | _Mapping | None = ...,
        unsubscribe: Unsubscribe | _Mapping | None = ...,
        message: Message | _Mapping | None = ...,
        subscribe: Subscribe | _Mapping | None = ...,
        connect: Connect | _Mapping | None = ...,
        disconnect: Disconnect | _Mapping | None = ...,
        refresh: Refresh | _Mapping | None = ...,
    ) -> None: ...

class Dictionary(_message.Message):
    __slots__ = ("data", "data_b64", "id")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DATA_B64_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    data_b64: str
    def __init__(
        self, id: str | None = ..., data: bytes | None = ..., data_b64: str | None = ...
    ) -> None: ...

class ClientInfo(_message.Message):
    __slots__ = ("chan_info", "client", "conn_info", "user")
    USER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    CONN_INFO_FIELD_NUMBER: _ClassVar[int]
    CHAN_INFO_FIELD_NUMBER: _ClassVar[int]
    user: str
    client: str
    conn_info: bytes
    chan_info: bytes
    def __init__(
        self,
        user: str | None = ...,
        client: str | None = ...,
        conn_info: bytes | None = ...,
        chan_info: bytes | None = ...,
    ) -> None: ...

class Publication(_message.Message):
    __slots__ = (
        "channel",
        "data",
        "delta",
        "epoch",
        "info",
        "key",
        "offset",
        "prev_data",
        "removed",
        "score",
        "tags",
        "time",
        "version",
    )
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...

    DATA_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PREV_DATA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    info: ClientInfo
    offset: int
    tags: _containers.ScalarMap[str, str]
    delta: bool
    time: int
    channel: str
    key: str
    removed: bool
    score: int
    epoch: str
    prev_data: bytes
    version: int
    def __init__(
        self,
        data: bytes | None = ...,
        info: ClientInfo | _Mapping | None = ...,
        offset: int | None = ...,
        tags: _Mapping[str, str] | None = ...,
        delta: bool = ...,
        time: int | None = ...,
        channel: str | None = ...,
        key: str | None = ...,
        removed: bool = ...,
        score: int | None = ...,
        epoch: str | None = ...,
        prev_data: bytes | None = ...,
        version: int | None = ...,
    ) -> None: ...

class Join(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ClientInfo
    def __init__(self, info: ClientInfo | _Mapping | None = ...) -> None: ...

class Leave(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ClientInfo
    def __init__(self, info: ClientInfo | _Mapping | None = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    def __init__(self, code: int | None = ..., reason: str | None = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("data", "epoch", "offset", "positioned", "recoverable")
    RECOVERABLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    POSITIONED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    recoverable: bool
    epoch: str
    offset: int
    positioned: bool
    data: bytes
    def __init__(
        self,
        recoverable: bool = ...,
        epoch: str | None = ...,
        offset: int | None = ...,
        positioned: bool = ...,
        data: bytes | None = ...,
    ) -> None: ...

class Message(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: bytes | None = ...) -> None: ...

class Connect(_message.Message):
    __slots__ = (
        "client",
        "data",
        "expires",
        "node",
        "ping",
        "pong",
        "session",
        "subs",
        "time",
        "ttl",
        "version",
    )
    class SubsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SubscribeResult
        def __init__(
            self, key: str | None = ..., value: SubscribeResult | _Mapping | None = ...
        ) -> None: ...

    CLIENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SUBS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    client: str
    version: str
    data: bytes
    subs: _containers.MessageMap[str, SubscribeResult]
    expires: bool
    ttl: int
    ping: int
    pong: bool
    session: str
    node: str
    time: int
    def __init__(
        self,
        client: str | None = ...,
        version: str | None = ...,
        data: bytes | None = ...,
        subs: _Mapping[str, SubscribeResult] | None = ...,
        expires: bool = ...,
        ttl: int | None = ...,
        ping: int | None = ...,
        pong: bool = ...,
        session: str | None = ...,
        node: str | None = ...,
        time: int | None = ...,
    ) -> None: ...

class Disconnect(_message.Message):
    __slots__ = ("code", "reason", "reconnect")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    reconnect: bool
    def __init__(
        self, code: int | None = ..., reason: str | None = ..., reconnect: bool = ...
    ) -> None: ...

class Refresh(_message.Message):
    __slots__ = ("expires", "ttl")
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    expires: bool
    ttl: int
    def __init__(self, expires: bool = ..., ttl: int | None = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("data", "dict", "flag", "headers", "name", "profile", "subs", "token", "version")
    class SubsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SubscribeRequest
        def __init__(
            self, key: str | None = ..., value: SubscribeRequest | _Mapping | None = ...
        ) -> None: ...

    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...

    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SUBS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    DICT_FIELD_NUMBER: _ClassVar[int]
    token: str
    data: bytes
    subs: _containers.MessageMap[str, SubscribeRequest]
    name: str
    version: str
    headers: _containers.ScalarMap[str, str]
    flag: int
    profile: str
    dict: str
    def __init__(
        self,
        token: str | None = ...,
        data: bytes | None = ...,
        subs: _Mapping[str, SubscribeRequest] | None = ...,
        name: str | None = ...,
        version: str | None = ...,
        headers: _Mapping[str, str] | None = ...,
        flag: int | None = ...,
        profile: str | None = ...,
        dict: str | None = ...,
    ) -> None: ...

class ConnectResult(_message.Message):
    __slots__ = (
        "client",
        "data",
        "dict",
        "expires",
        "flag",
        "node",
        "ping",
        "pong",
        "session",
        "subs",
        "time",
        "ttl",
        "version",
    )
    class SubsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SubscribeResult
        def __init__(
            self, key: str | None = ..., value: SubscribeResult | _Mapping | None = ...
        ) -> None: ...

    CLIENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SUBS_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    DICT_FIELD_NUMBER: _ClassVar[int]
    client: str
    version: str
    expires: bool
    ttl: int
    data: bytes
    subs: _containers.MessageMap[str, SubscribeResult]
    ping: int
    pong: bool
    session: str
    node: str
    time: int
    flag: int
    dict: Dictionary
    def __init__(
        self,
        client: str | None = ...,
        version: str | None = ...,
        expires: bool = ...,
        ttl: int | None = ...,
        data: bytes | None = ...,
        subs: _Mapping[str, SubscribeResult] | None = ...,
        ping: int | None = ...,
        pong: bool = ...,
        session: str | None = ...,
        node: str | None = ...,
        time: int | None = ...,
        flag: int | None = ...,
        dict: Dictionary | _Mapping | None = ...,
    ) -> None: ...

class RefreshRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: str | None = ...) -> None: ...

class RefreshResult(_message.Message):
    __slots__ = ("client", "expires", "ttl", "version")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    client: str
    version: str
    expires: bool
    ttl: int
    def __init__(
        self,
        client: str | None = ...,
        version: str | None = ...,
        expires: bool = ...,
        ttl: int | None = ...,
    ) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = (
        "asc",
        "channel",
        "cursor",
        "data",
        "delta",
        "epoch",
        "flag",
        "join_leave",
        "limit",
        "offset",
        "phase",
        "positioned",
        "recover",
        "recoverable",
        "tf",
        "token",
        "type",
    )
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECOVER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    POSITIONED_FIELD_NUMBER: _ClassVar[int]
    RECOVERABLE_FIELD_NUMBER: _ClassVar[int]
    JOIN_LEAVE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TF_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ASC_FIELD_NUMBER: _ClassVar[int]
    channel: str
    token: str
    recover: bool
    epoch: str
    offset: int
    data: bytes
    positioned: bool
    recoverable: bool
    join_leave: bool
    delta: str
    tf: FilterNode
    flag: int
    type: int
    phase: int
    cursor: str
    limit: int
    asc: bool
    def __init__(
        self,
        channel: str | None = ...,
        token: str | None = ...,
        recover: bool = ...,
        epoch: str | None = ...,
        offset: int | None = ...,
        data: bytes | None = ...,
        positioned: bool = ...,
        recoverable: bool = ...,
        join_leave: bool = ...,
        delta: str | None = ...,
        tf: FilterNode | _Mapping | None = ...,
        flag: int | None = ...,
        type: int | None = ...,
        phase: int | None = ...,
        cursor: str | None = ...,
        limit: int | None = ...,
        asc: bool = ...,
    ) -> None: ...

class SubscribeResult(_message.Message):
    __slots__ = (
        "cursor",
        "data",
        "delta",
        "epoch",
        "expires",
        "id",
        "offset",
        "phase",
        "positioned",
        "publications",
        "publish_debounce",
        "recoverable",
        "recovered",
        "state",
        "ttl",
        "type",
        "was_recovering",
    )
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    RECOVERABLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PUBLICATIONS_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    POSITIONED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WAS_RECOVERING_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_DEBOUNCE_FIELD_NUMBER: _ClassVar[int]
    expires: bool
    ttl: int
    recoverable: bool
    epoch: str
    publications: _containers.RepeatedCompositeFieldContainer[Publication]
    recovered: bool
    offset: int
    positioned: bool
    data: bytes
    was_recovering: bool
    delta: bool
    id: int
    type: int
    phase: int
    cursor: str
    state: _containers.RepeatedCompositeFieldContainer[Publication]
    publish_debounce: int
    def __init__(
        self,
        expires: bool = ...,
        ttl: int | None = ...,
        recoverable: bool = ...,
        epoch: str | None = ...,
        publications: _Iterable[Publication | _Mapping] | None = ...,
        recovered: bool = ...,
        offset: int | None = ...,
        positioned: bool = ...,
        data: bytes | None = ...,
        was_recovering: bool = ...,
        delta: bool = ...,
        id: int | None = ...,
        type: int | None = ...,
        phase: int | None = ...,
        cursor: str | None = ...,
        state: _Iterable[Publication | _Mapping] | None = ...,
        publish_debounce: int | None = ...,
    ) -> None: ...

class KeyedItem(_message.Message):
    __slots__ = ("key", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: int
    def __init__(self, key: str | None = ..., version: int | None = ...) -> None: ...

class TrackBatch(_message.Message):
    __slots__ = ("items", "signature")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    signature: str
    items: _containers.RepeatedCompositeFieldContainer[KeyedItem]
    def __init__(
        self, signature: str | None = ..., items: _Iterable[KeyedItem | _Mapping] | None = ...
    ) -> None: ...

class SubRefreshRequest(_message.Message):
    __slots__ = ("channel", "token", "track", "type", "untrack")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    UNTRACK_FIELD_NUMBER: _ClassVar[int]
    channel: str
    token: str
    type: int
    track: _containers.RepeatedCompositeFieldContainer[TrackBatch]
    untrack: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        channel: str | None = ...,
        token: str | None = ...,
        type: int | None = ...,
        track: _Iterable[TrackBatch | _Mapping] | None = ...,
        untrack: _Iterable[str] | None = ...,
    ) -> None: ...

class SubRefreshResult(_message.Message):
    __slots__ = ("expires", "items", "ttl")
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    expires: bool
    ttl: int
    items: _containers.RepeatedCompositeFieldContainer[Publication]
    def __init__(
        self,
        expires: bool = ...,
        ttl: int | None = ...,
        items: _Iterable[Publication | _Mapping] | None = ...,
    ) -> None: ...

class UnsubscribeRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: str | None = ...) -> None: ...

class UnsubscribeResult(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("channel", "data", "key", "removed", "type")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    channel: str
    data: bytes
    type: int
    key: str
    removed: bool
    def __init__(
        self,
        channel: str | None = ...,
        data: bytes | None = ...,
        type: int | None = ...,
        key: str | None = ...,
        removed: bool = ...,
    ) -> None: ...

class PublishResult(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PresenceRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: str | None = ...) -> None: ...

class PresenceResult(_message.Message):
    __slots__ = ("presence",)
    class PresenceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ClientInfo
        def __init__(
            self, key: str | None = ..., value: ClientInfo | _Mapping | None = ...
        ) -> None: ...

    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    presence: _containers.MessageMap[str, ClientInfo]
    def __init__(self, presence: _Mapping[str, ClientInfo] | None = ...) -> None: ...

class PresenceStatsRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: str | None = ...) -> None: ...

class PresenceStatsResult(_message.Message):
    __slots__ = ("num_clients", "num_users")
    NUM_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    NUM_USERS_FIELD_NUMBER: _ClassVar[int]
    num_clients: int
    num_users: int
    def __init__(self, num_clients: int | None = ..., num_users: int | None = ...) -> None: ...

class StreamPosition(_message.Message):
    __slots__ = ("epoch", "offset")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    offset: int
    epoch: str
    def __init__(self, offset: int | None = ..., epoch: str | None = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("channel", "limit", "reverse", "since")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    channel: str
    limit: int
    since: StreamPosition
    reverse: bool
    def __init__(
        self,
        channel: str | None = ...,
        limit: int | None = ...,
        since: StreamPosition | _Mapping | None = ...,
        reverse: bool = ...,
    ) -> None: ...

class HistoryResult(_message.Message):
    __slots__ = ("epoch", "offset", "publications")
    PUBLICATIONS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    publications: _containers.RepeatedCompositeFieldContainer[Publication]
    epoch: str
    offset: int
    def __init__(
        self,
        publications: _Iterable[Publication | _Mapping] | None = ...,
        epoch: str | None = ...,
        offset: int | None = ...,
    ) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResult(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RPCRequest(_message.Message):
    __slots__ = ("data", "method")
    DATA_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    method: str
    def __init__(self, data: bytes | None = ..., method: str | None = ...) -> None: ...

class RPCResult(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: bytes | None = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: bytes | None = ...) -> None: ...

class FilterNode(_message.Message):
    __slots__ = ("cmp", "key", "nodes", "op", "val", "vals")
    OP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CMP_FIELD_NUMBER: _ClassVar[int]
    VAL_FIELD_NUMBER: _ClassVar[int]
    VALS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    op: str
    key: str
    cmp: str
    val: str
    vals: _containers.RepeatedScalarFieldContainer[str]
    nodes: _containers.RepeatedCompositeFieldContainer[FilterNode]
    def __init__(
        self,
        op: str | None = ...,
        key: str | None = ...,
        cmp: str | None = ...,
        val: str | None = ...,
        vals: _Iterable[str] | None = ...,
        nodes: _Iterable[FilterNode | _Mapping] | None = ...,
    ) -> None: ...
