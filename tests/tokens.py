"""Access tokens for the tests: ``mercure`` authorization details, in the spelling that both
the current Mercure draft and its earlier revisions read (the detail type ``mercure``,
``matchType: URLPattern``), so that an attack test runs unchanged against older versions of
the server too. (The current spelling is tested in ``test_mercure`` and ``test_auth_grants``.)"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jwt

#: The ``type`` of a Mercure authorization detail, as every revision reads it.
DETAIL_TYPE = "mercure"

Matcher = str | dict[str, str]


def pattern(value: str) -> dict[str, str]:
    """A URL pattern matcher."""
    return {"match": value, "matchType": "URLPattern"}


def mint(
    secret: str,
    *,
    publish: Sequence[Matcher] = (),
    subscribe: Sequence[Matcher] = (),
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """An HS256 token granting ``publish``/``subscribe`` on those matchers (a string is an
    exact matcher); an ``exp`` an hour away unless given (``exp=None`` leaves it out)."""
    details = [
        {
            "type": DETAIL_TYPE,
            "actions": [action],
            "topics": [{"match": m} if isinstance(m, str) else m for m in matchers],
        }
        for action, matchers in (("publish", publish), ("subscribe", subscribe))
        if matchers
    ]
    if details:
        claims.setdefault("authorization_details", details)
    claims.setdefault("exp", int(time.time()) + 3600)
    if claims["exp"] is None:
        del claims["exp"]
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
