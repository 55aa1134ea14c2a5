"""Verifying JSON Web Tokens (PyJWT), with the algorithm tied to the key that checks it.

Each configured key brings its own algorithm (an HMAC secret: HS256; an RSA public key: RS256;
an EC public key: ES256, ES384 or ES512 after its curve; an Ed25519 public key: EdDSA), and a
token is only ever checked with a key of the algorithm its header names. So ``alg: none`` and
algorithm confusion (an RS256 public key used as an HS256 secret) are refused before any
signature is computed.

For OAuth 2.0 access tokens (RFC 9068, as the Mercure draft requires), also pass
``token_type="at+jwt"`` (the header's ``typ`` must say so: an OpenID Connect ID token signed
with the same key is refused), the ``audience`` and the ``issuer``.

>>> verifier = TokenVerifier(hmac_secret="s3cret")
>>> claims = verifier.verify(token)          # doctest: +SKIP
"""

from __future__ import annotations

import time
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


#: ``typ`` values of tokens that may be access tokens (RFC 7519 5.1, RFC 9068 2.1).
_JWT_TYPES = frozenset({"jwt", "at+jwt"})


def _media_type(value: str) -> str:
    # RFC 7515 4.1.9: compared case-insensitively, "application/" may be left out.
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


class TokenVerifier:
    """Checks signature, ``exp`` / ``nbf`` (with ``leeway`` seconds of clock skew), the
    header's ``typ``, the audience, the issuer, and the token's lifetime. Raises
    :class:`TokenError`.

    ``audience``: when set, a token must name it in ``aud``. Otherwise a token may go without
    ``aud``, but one that has it must name one of ``identities`` (RFC 7519 4.1.3: a principal
    that does not identify itself with a value of a present ``aud`` must reject the token).
    ``issuer``: when set, ``iss`` must be it. ``token_type``: the header's ``typ`` must be
    this media type (e.g. ``at+jwt``); unset, a ``typ`` may be absent, ``JWT`` or ``at+jwt``,
    and anything else (an ID token's or a DPoP proof's type...) is refused. ``require_exp``:
    a token without ``exp`` is refused. ``max_lifetime``: nor is one that expires more than
    this many seconds from now (``exp: 1e308`` is no expiry at all). ``required_claims``:
    further claims that must be present.
    """

    def __init__(
        self,
        *,
        hmac_secret: str | None = None,
        public_key_pem: str | None = None,
        audience: str | None = None,
        identities: Sequence[str] = (),
        issuer: str | None = None,
        leeway: float = 0.0,
        token_type: str | None = None,
        require_exp: bool = False,
        max_lifetime: float | None = None,
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
        self.identities = frozenset(identities)
        self.issuer = issuer
        self.leeway = leeway
        self.token_type = token_type
        self.max_lifetime = max_lifetime
        self.required_claims = tuple(
            dict.fromkeys([*(["exp"] if require_exp else []), *required_claims])
        )

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
        self._check_type(header.get("typ"))
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
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                # PyJWT reads "123" as 123; a lifetime and a deadline need a number.
                raise TokenError(f"the {name} claim is not a number")
        if self.audience is None and "aud" in claims:
            self._check_identity(claims["aud"])
        if self.max_lifetime is not None:
            self._check_lifetime(claims.get("exp"))
        return claims

    def _check_type(self, typ: Any) -> None:
        if self.token_type is not None:
            if not isinstance(typ, str) or _media_type(typ) != _media_type(self.token_type):
                raise TokenError(f"token type must be {self.token_type!r}")
        elif typ is not None and (not isinstance(typ, str) or _media_type(typ) not in _JWT_TYPES):
            raise TokenError(f"token type {str(typ)[:40]!r} is not an access token's")

    def _check_identity(self, audience: Any) -> None:
        named = [audience] if isinstance(audience, str) else audience
        if not isinstance(named, list) or not self.identities.intersection(
            value for value in named if isinstance(value, str)
        ):
            raise TokenError("the token is meant for another audience")

    def _check_lifetime(self, expires: Any) -> None:
        assert self.max_lifetime is not None
        if isinstance(expires, int | float) and expires - time.time() > (
            self.max_lifetime + self.leeway
        ):
            raise TokenError(f"the token lives longer than {self.max_lifetime:g} s")
