"""Verifying JSON Web Tokens (PyJWT), with the algorithm tied to the key that checks it.

Each configured key brings its own algorithm (an HMAC secret: HS256; an RSA public key: RS256;
an EC public key: ES256), and a token is only ever checked with a key of the algorithm its
header names. So ``alg: none`` and algorithm confusion (an RS256 public key used as an HS256
secret) are refused before any signature is computed.

>>> verifier = TokenVerifier(hmac_secret="s3cret")
>>> claims = verifier.verify(token)          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key


class TokenError(Exception):
    """A token that is not acceptable; ``expired`` tells a client it may fetch a new one."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class _Key:
    algorithm: str
    key: Any


class TokenVerifier:
    """Checks signature, ``exp`` / ``nbf`` (with ``leeway`` seconds of clock skew), and the
    audience and issuer when they are configured. Raises :class:`TokenError`."""

    def __init__(
        self,
        *,
        hmac_secret: str | None = None,
        public_key_pem: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        self._keys: dict[str, _Key] = {}
        if hmac_secret:
            self._keys["HS256"] = _Key("HS256", hmac_secret.encode())
        if public_key_pem:
            public_key = load_pem_public_key(public_key_pem.encode())
            if isinstance(public_key, rsa.RSAPublicKey):
                self._keys["RS256"] = _Key("RS256", public_key)
            elif isinstance(public_key, ec.EllipticCurvePublicKey):
                self._keys["ES256"] = _Key("ES256", public_key)
            else:
                raise ValueError("the public key must be an RSA or an EC (P-256) key")
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway

    @property
    def configured(self) -> bool:
        """False when no key is set: then no token can be verified."""
        return bool(self._keys)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once everything about it checks out."""
        if not self._keys:
            raise TokenError("tokens are not accepted: no verification key is configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        algorithm = header.get("alg")
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            raise TokenError(f"token algorithm {str(algorithm)[:20]!r} is not accepted")
        # Without a configured audience, a token's own "aud" is not ours to judge.
        options = {"verify_aud": self.audience is not None}
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", expired=True) from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        return claims
