"""Authentication: JSON Web Tokens checked with the configured keys."""

from sluiceway.auth.tokens import TokenError, TokenVerifier

__all__ = ["TokenError", "TokenVerifier"]
