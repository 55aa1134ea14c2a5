"""Error replies and disconnect codes of Centrifugo's client protocol.

Errors answer one command and leave the connection open. Disconnects close the WebSocket with
a code and a reason: clients reconnect after codes 3000-3499 and 4000-4499 (and recover their
subscriptions), and stay away after 3500-3999 and 4500-4999 (terminal).
"""

from __future__ import annotations

from dataclasses import dataclass


class ReplyError(Exception):
    """Answer the command with ``{"error": {"code": ..., "message": ...}}``.

    Raise it from a hook (``on_subscribe``, ``on_publish``...) to refuse with your own code
    (4000-4999 for application errors) or one of the built-in ones below.
    """

    def __init__(self, code: int, message: str, *, temporary: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary


@dataclass(frozen=True, slots=True)
class Disconnect(Exception):
    """Close the connection with ``code`` and ``reason`` (raise it from a hook)."""

    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        return self.code < 3500 or self.code >= 5000 or 4000 <= self.code < 4500


def hook_timeout() -> ReplyError:
    """An application hook (an RPC handler...) did not answer in time: try again."""
    return ReplyError(
        100, "internal server error: the application did not answer in time", temporary=True
    )


def internal() -> ReplyError:
    return ReplyError(100, "internal server error", temporary=True)


def unauthorized() -> ReplyError:
    return ReplyError(101, "unauthorized")


def unknown_channel() -> ReplyError:
    return ReplyError(102, "unknown channel")


def permission_denied() -> ReplyError:
    return ReplyError(103, "permission denied")


def method_not_found() -> ReplyError:
    return ReplyError(104, "method not found")


def already_subscribed() -> ReplyError:
    return ReplyError(105, "already subscribed")


def limit_exceeded() -> ReplyError:
    return ReplyError(106, "limit exceeded")


def bad_request(detail: str = "") -> ReplyError:
    return ReplyError(107, f"bad request: {detail}" if detail else "bad request")


def not_available() -> ReplyError:
    return ReplyError(108, "not available")


def token_expired() -> ReplyError:
    return ReplyError(109, "token expired")


def too_many_requests() -> ReplyError:
    return ReplyError(111, "too many requests", temporary=True)


def unrecoverable_position() -> ReplyError:
    return ReplyError(112, "unrecoverable position")


SHUTDOWN = Disconnect(3001, "shutdown")
SERVER_ERROR = Disconnect(3004, "internal server error")
EXPIRED = Disconnect(3005, "connection expired")
SUB_EXPIRED = Disconnect(3006, "subscription expired")
SLOW = Disconnect(3008, "slow")
WRITE_ERROR = Disconnect(3009, "write error")
INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
NO_PONG = Disconnect(3012, "no pong")
TOO_MANY_REQUESTS = Disconnect(3013, "too many requests")
INVALID_TOKEN = Disconnect(3500, "invalid token")
BAD_REQUEST = Disconnect(3501, "bad request")
STALE = Disconnect(3502, "stale")
MESSAGE_TOO_LARGE = Disconnect(3501, "bad request: frame too large")

#: Unsubscribe push codes: below 2500 the client stays unsubscribed.
UNSUBSCRIBE_SERVER = 2000
