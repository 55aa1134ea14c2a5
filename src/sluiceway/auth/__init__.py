"""Authentication and authorization: JSON Web Tokens checked with the configured keys, and the
grants they carry (Mercure's ``mercure`` authorization details)."""

from sluiceway.auth.grants import (
    AuthError,
    Detail,
    GrantLimits,
    Grants,
    authenticate,
    token_from,
    www_authenticate,
)
from sluiceway.auth.tokens import TokenError, TokenVerifier

__all__ = [
    "AuthError",
    "Detail",
    "GrantLimits",
    "Grants",
    "TokenError",
    "TokenVerifier",
    "authenticate",
    "token_from",
    "www_authenticate",
]
