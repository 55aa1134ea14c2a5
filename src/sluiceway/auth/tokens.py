"""Verifying JSON Web Tokens (PyJWT), with the algorithm tied to the key that checks it.

Each configured key brings its own algorithm (an HMAC secret: HS256; an RSA public key: RS256;
an EC public key: ES256, ES384 or ES512 after its curve; an Ed25519 public key: EdDSA), and a
token is only ever checked with a key of the algorithm its header names. So ``alg: none`` and
algorithm confusion (an RS256 public key used as an HS256 secret) are refused before any
signature is computed.

For OAuth 2.0 access tokens (RFC 9068, as the Mercure draft requires), also pass
``token_type="at+jwt"`` (the header's ``typ`` must say so: an OpenID Connect ID token signed
with the same key is refused) and ``required_claims=("exp",)``.

>>> verifier = TokenVerifier(hmac_secret="s3cret")
>>> claims = verifier.verify(token)          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
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


# EC keys: the algorithm follows the curve (RFC 7518 3.4), never the token's header.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def _media_type(value: str) -> str:
    # RFC 7515 4.1.9: compared case-insensitively, "application/" may be left out.
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


class TokenVerifier:
    """Checks signature, ``exp`` / ``nbf`` (with ``leeway`` seconds of clock skew), and the
    audience and issuer when they are configured. Raises :class:`TokenError`.

    ``token_type``: the header's ``typ`` must be this media type (e.g. ``at+jwt``).
    ``required_claims``: claims that must be present (e.g. ``("exp",)``).
    """

    def __init__(
        self,
        *,
        hmac_secret: str | None = None,
        public_key_pem: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        token_type: str | None = None,
        required_claims: Sequence[str] = (),
    ) -> None:
        self._keys: dict[str, _Key] = {}
        if hmac_secret:
            self._keys["HS256"] = _Key("HS256", hmac_secret.encode())
        if public_key_pem:
            public_key = load_pem_public_key(public_key_pem.encode())
            if isinstance(public_key, rsa.RSAPublicKey):
                self._keys["RS256"] = _Key("RS256", public_key)
            elif isinstance(public_key, ec.EllipticCurvePublicKey):
                algorithm = _EC_ALGORITHMS.get(public_key.curve.name)
                if algorithm is None:
                    raise ValueError(f"unsupported EC curve {public_key.curve.name}")
                self._keys[algorithm] = _Key(algorithm, public_key)
            elif isinstance(public_key, ed25519.Ed25519PublicKey):
                self._keys["EdDSA"] = _Key("EdDSA", public_key)
            else:
                raise ValueError("the public key must be an RSA, EC (P-256/384/521) or Ed25519 key")
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.token_type = token_type
        self.required_claims = tuple(required_claims)

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
        if self.token_type is not None:
            typ = header.get("typ")
            if not isinstance(typ, str) or _media_type(typ) != _media_type(self.token_type):
                raise TokenError(f"token type must be {self.token_type!r}")
        # Without a configured audience, a token's own "aud" is not ours to judge.
        options: dict[str, Any] = {"verify_aud": self.audience is not None}
        if self.required_claims:
            options["require"] = list(self.required_claims)
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
