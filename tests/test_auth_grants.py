"""Access tokens and the grants they carry: verification (PyJWT), Mercure authorization
details, token extraction and RFC 6750 errors. Properties: a private update is never judged
receivable without a matching ``subscribe`` grant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sluiceway.auth import (
    AuthError,
    GrantLimits,
    Grants,
    TokenError,
    TokenVerifier,
    authenticate,
    token_from,
    www_authenticate,
)

HUB = "https://example.com/.well-known/mercure"
COOKIE = "__Secure-mercure_access_token"
URLP = "URLPattern"
SECRET = "s" * 32
AUDIENCE = "https://example.com/.well-known/mercure"


def pem(private_key: Any) -> tuple[str, Any]:
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.decode(), private_key


@pytest.fixture(scope="module")
def rsa_key() -> tuple[str, Any]:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def detail(actions: list[str], *matchers: Any, **extra: Any) -> dict[str, Any]:
    topics = [m if isinstance(m, dict) else {"match": m} for m in matchers]
    return {"type": "mercure", "actions": actions, "topics": topics, **extra}


def grants_of(*details: dict[str, Any], **options: Any) -> Grants:
    return Grants.from_claims({"authorization_details": list(details)}, hub_url=HUB, **options)


def hs256(claims: dict[str, Any], *, secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(claims: dict[str, Any], key: bytes, algorithm: str = "HS256") -> str:
    """An HMAC-signed token with any key and any alg header (PyJWT refuses to make these)."""
    head = b64(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def with_alg(token: str, algorithm: str) -> str:
    """The same token (and signature) under another alg header."""
    _, body, signature = token.split(".")
    return f"{b64(json.dumps({'alg': algorithm, 'typ': 'JWT'}).encode())}.{body}.{signature}"


# -- the verifier ------------------------------------------------------------------------------


def test_hs256_token_with_audience_issuer_and_access_token_type() -> None:
    verifier = TokenVerifier(
        hmac_secret=SECRET,
        audience=AUDIENCE,
        issuer="https://issuer.example",
        token_type="at+jwt",
        required_claims=("exp",),
    )
    claims = {"aud": [AUDIENCE, "other"], "iss": "https://issuer.example", "exp": time.time() + 60}
    assert verifier.verify(hs256(claims, typ="at+jwt"))["aud"] == [AUDIENCE, "other"]
    assert verifier.verify(hs256(claims, typ="application/AT+JWT"))  # media type rules
    for typ in (None, "JWT", "at+jwt2"):
        token = hs256(claims, typ=typ) if typ else jwt.encode(claims, SECRET, algorithm="HS256")
        with pytest.raises(TokenError, match="token type"):
            TokenVerifier(hmac_secret=SECRET, token_type="at+jwt").verify(token)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "https://other.example/m", "iss": "https://issuer.example"}, "(?i)audience"),
        ({"iss": "https://issuer.example"}, '"aud"'),  # a configured audience is required
        ({"aud": AUDIENCE, "iss": "https://evil.example"}, "(?i)issuer"),
        ({"aud": AUDIENCE}, '"iss"'),
        ({"aud": AUDIENCE, "iss": "https://issuer.example", "nbf": time.time() + 600}, "yet valid"),
    ],
)
def test_wrong_audience_issuer_or_not_yet_valid_tokens_are_refused(claims, message) -> None:
    verifier = TokenVerifier(hmac_secret=SECRET, audience=AUDIENCE, issuer="https://issuer.example")
    with pytest.raises(TokenError, match=message):
        verifier.verify(hs256(claims))


def test_expired_tokens_are_refused_and_say_so() -> None:
    verifier = TokenVerifier(hmac_secret=SECRET)
    with pytest.raises(TokenError) as caught:
        verifier.verify(hs256({"exp": time.time() - 30}))
    assert caught.value.expired
    # Within the leeway the token still counts.
    assert TokenVerifier(hmac_secret=SECRET, leeway=60).verify(hs256({"exp": time.time() - 30}))


def test_required_claims() -> None:
    verifier = TokenVerifier(hmac_secret=SECRET, required_claims=("exp",))
    with pytest.raises(TokenError, match="exp"):
        verifier.verify(hs256({"sub": "a"}))


def test_alg_none_unsigned_and_wrongly_signed_tokens_are_refused() -> None:
    verifier = TokenVerifier(hmac_secret=SECRET)
    unsigned = jwt.encode({"sub": "a"}, None, algorithm="none")
    with pytest.raises(TokenError, match="not accepted"):
        verifier.verify(unsigned)
    with pytest.raises(TokenError, match=r"(?i)signature"):
        verifier.verify(hs256({"sub": "a"}, secret="t" * 32))
    with pytest.raises(TokenError, match="not accepted"):  # a valid signature, alg none
        verifier.verify(with_alg(hs256({"sub": "a"}), "none"))
    with pytest.raises(TokenError, match="malformed"):
        verifier.verify("not.a.jwt")
    with pytest.raises(TokenError, match="not accepted"):
        TokenVerifier().verify(hs256({"sub": "a"}))


def test_rs256_and_algorithm_confusion(rsa_key) -> None:
    public_pem, private = rsa_key
    verifier = TokenVerifier(public_key_pem=public_pem)
    assert verifier.verify(jwt.encode({"sub": "a"}, private, algorithm="RS256"))["sub"] == "a"
    # The public key used as an HMAC secret: HS256 is not a configured algorithm here.
    with pytest.raises(TokenError, match="not accepted"):
        verifier.verify(forged({"sub": "a"}, public_pem.encode()))
    # Even where an HMAC secret is configured too, the RSA key never serves as one.
    both = TokenVerifier(hmac_secret=SECRET, public_key_pem=public_pem)
    with pytest.raises(TokenError, match=r"(?i)signature"):
        both.verify(forged({"sub": "a"}, public_pem.encode()))
    # RS512 is another algorithm than the key's.
    with pytest.raises(TokenError, match="not accepted"):
        verifier.verify(jwt.encode({"sub": "a"}, private, algorithm="RS512"))


@pytest.mark.parametrize(
    ("curve", "algorithm"),
    [(ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")],
)
def test_ec_keys_verify_their_own_algorithm_only(curve, algorithm) -> None:
    public_pem, private = pem(ec.generate_private_key(curve))
    verifier = TokenVerifier(public_key_pem=public_pem)
    assert verifier.verify(jwt.encode({"sub": "a"}, private, algorithm=algorithm))["sub"] == "a"
    other = {"ES256": "ES384", "ES384": "ES256", "ES512": "ES256"}[algorithm]
    with pytest.raises(TokenError, match="not accepted"):
        verifier.verify(with_alg(jwt.encode({"sub": "a"}, private, algorithm=algorithm), other))
    # Signed by another key of the same curve.
    _, stranger = pem(ec.generate_private_key(curve))
    with pytest.raises(TokenError, match=r"(?i)signature"):
        verifier.verify(jwt.encode({"sub": "a"}, stranger, algorithm=algorithm))


def test_eddsa_keys() -> None:
    public_pem, private = pem(ed25519.Ed25519PrivateKey.generate())
    verifier = TokenVerifier(public_key_pem=public_pem, token_type="at+jwt")
    token = jwt.encode({"sub": "a"}, private, algorithm="EdDSA", headers={"typ": "at+jwt"})
    assert verifier.verify(token)["sub"] == "a"


def test_unsupported_public_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed448

    public_pem, _ = pem(ed448.Ed448PrivateKey.generate())
    with pytest.raises(ValueError, match="RSA, EC"):
        TokenVerifier(public_key_pem=public_pem)
    public_pem, _ = pem(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(ValueError, match="curve"):
        TokenVerifier(public_key_pem=public_pem)


# -- grants from claims ------------------------------------------------------------------------


def test_the_draft_example_private_books() -> None:
    grants = grants_of(
        detail(
            ["subscribe"],
            {"match": "https://example.com/books/1", "matchType": "Exact"},
            {"match": "https://example.com/books/7", "matchType": "Exact"},
        )
    )
    assert grants.may_receive("https://example.com/books/1", private=True)
    assert not grants.may_receive("https://example.com/books/2", private=True)
    assert grants.may_receive("https://example.com/books/2", private=False)
    assert not grants.may_publish("https://example.com/books/1")


def test_actions_are_separate() -> None:
    grants = grants_of(
        detail(["publish"], "https://example.com/a"),
        detail(["subscribe"], "https://example.com/b"),
        detail(["publish", "subscribe"], {"match": "https://example.com/c/:id", "matchType": URLP}),
    )
    assert grants.may_publish("https://example.com/a")
    assert not grants.may_subscribe_to("https://example.com/a")
    assert grants.may_subscribe_to("https://example.com/b")
    assert not grants.may_publish("https://example.com/b")
    assert grants.may_publish("https://example.com/c/1")
    assert grants.may_subscribe_to("https://example.com/c/1")
    assert not grants.may_subscribe_to("https://example.com/c/1/2")


def test_the_wildcard_with_or_without_match_type() -> None:
    for matcher in ({"match": "*"}, {"match": "*", "matchType": "URLPattern"}):
        grants = grants_of(detail(["subscribe"], matcher))
        assert grants.may_receive("anything", private=True)
        assert not grants.may_publish("anything")


def test_relative_url_patterns_cover_the_subscriptions_api() -> None:
    grants = grants_of(
        detail(
            ["subscribe"],
            {"match": "/.well-known/mercure/subscriptions{/:rest}*", "matchType": "URLPattern"},
        )
    )
    assert grants.may_subscribe_to("/.well-known/mercure/subscriptions")
    assert grants.may_subscribe_to("/.well-known/mercure/subscriptions/Exact/a/b")
    assert not grants.may_subscribe_to("/.well-known/mercure/other")


def test_details_of_other_types_are_ignored() -> None:
    grants = Grants.from_claims(
        {"authorization_details": [{"type": "payment_initiation", "actions": ["pay"]}]}
    )
    assert grants.authenticated and not grants.details
    assert not grants.may_receive("t", private=True)


@pytest.mark.parametrize(
    ("raw", "detail_message"),
    [
        ({"type": "mercure"}, "authorization_details must be an array"),
        (["mercure"], "no string type"),
        ([{"actions": ["publish"]}], "no string type"),
        ([{"type": "mercure", "actions": [], "topics": [{"match": "a"}]}], "actions"),
        ([{"type": "mercure", "actions": ["read", 1], "topics": [{"match": "a"}]}], "actions"),
        ([{"type": "mercure", "actions": "publish", "topics": [{"match": "a"}]}], "actions"),
        ([{"type": "mercure", "actions": ["publish"]}], "topics"),
        ([{"type": "mercure", "actions": ["publish"], "topics": []}], "topics"),
        ([{"type": "mercure", "actions": ["publish"], "topics": ["a"]}], "topics[0]"),
        ([{"type": "mercure", "actions": ["publish"], "topics": [{"match": 1}]}], "topics[0]"),
        ([detail(["publish"], {"match": "a", "matchType": "EXACT"})], "matchType"),
        ([detail(["publish"], {"match": "a", "match_type": "URLPattern"})], "match_type"),
        (
            [detail(["publish"], {"match": "a", "match_type": "exact", "matchType": "Exact"})],
            "both",
        ),
        ([detail(["publish"], {"match": "/(", "matchType": URLP})], "topics[0]"),
        ([detail(["publish"], "a\n")], "control"),
        ([detail(["subscribe"], "a", payload=[1])], "payload"),
        # One bad detail spoils the token: no partial acceptance.
        (
            [detail(["subscribe"], "*"), detail(["subscribe"], {"match": "a", "matchType": "Re"})],
            "authorization_details[1]",
        ),
    ],
)
def test_malformed_authorization_details_invalidate_the_whole_token(raw, detail_message) -> None:
    with pytest.raises(AuthError) as caught:
        Grants.from_claims({"authorization_details": raw}, hub_url=HUB)
    assert (caught.value.status, caught.value.error) == (401, "invalid_token")
    assert caught.value.description == "the access token is not valid"  # says nothing more
    assert detail_message in caught.value.detail


def test_limits_on_what_a_token_carries() -> None:
    limits = GrantLimits(max_details=2, max_topics=2, max_pattern_length=10)
    ok = detail(["subscribe"], "a", "b")
    assert grants_of(ok, ok, limits=limits)
    for details, message in [
        ([ok, ok, ok], "more than 2 mercure authorization details"),
        ([detail(["subscribe"], "a", "b", "c")], "more than 2 entries"),
        ([detail(["subscribe"], "x" * 11)], "longer than 10"),
    ]:
        with pytest.raises(AuthError) as caught:
            grants_of(*details, limits=limits)
        assert message in caught.value.detail


def test_payloads_follow_the_draft_example() -> None:
    grants = grants_of(
        detail(["subscribe"], "https://example.com/foo", payload={"custom1": 1}),
        detail(
            ["subscribe"],
            {"match": "https://example.com/bar/:id", "matchType": "URLPattern"},
            payload={"custom2": 2},
        ),
        detail(["subscribe"], "*", payload={"custom3": 3}),
        detail(["publish"], "*", payload={"never": "publish payloads"}),
    )
    assert grants.payload_for("https://example.com/foo") == {"custom1": 1}
    # The subscription's own matcher string, read as a topic.
    assert grants.payload_for("https://example.com/bar/:id") == {"custom2": 2}
    assert grants.payload_for("https://example.com/bar/7") == {"custom2": 2}
    assert grants.payload_for("https://example.com/other") == {"custom3": 3}
    # Order matters: a broad matcher first masks the specific ones.
    masked = grants_of(
        detail(["subscribe"], "*", payload={"default": True}),
        detail(["subscribe"], "https://example.com/foo", payload={"custom1": 1}),
    )
    assert masked.payload_for("https://example.com/foo") == {"default": True}
    assert grants_of(detail(["subscribe"], "a")).payload_for("a") is None


def test_subject_and_expiry() -> None:
    grants = Grants.from_claims({"sub": "https://example.com/users/1", "exp": 1700000000})
    assert grants.subject == "https://example.com/users/1"
    assert grants.expires_at == 1700000000.0
    assert Grants.from_claims({"sub": 12}).subject is None
    assert repr(grants) == "<Grants https://example.com/users/1: 0 detail(s)>"


def test_legacy_mercure_claim_only_when_enabled() -> None:
    claims = {"mercure": {"publish": ["*"], "subscribe": ["https://example.com/a"], "payload": 7}}
    assert not Grants.from_claims(claims).may_publish("t")
    legacy = Grants.from_claims(claims, legacy_claims=True)
    assert legacy.may_publish("t")
    assert legacy.may_receive("https://example.com/a", private=True)
    assert not legacy.may_receive("https://example.com/b", private=True)
    assert legacy.payload_for("https://example.com/a") == 7
    assert not Grants.from_claims({"mercure": {"publish": []}}, legacy_claims=True).may_publish("t")
    for bad, message in [
        ({"mercure": ["*"]}, "must be an object"),
        ({"mercure": {"subscribe": "*"}}, "array of strings"),
        ({"mercure": {"subscribe": ["https://example.com/{id}"]}}, "URI Templates"),
    ]:
        with pytest.raises(AuthError) as caught:
            Grants.from_claims(bad, legacy_claims=True)
        assert message in caught.value.detail


def test_anonymous_grants() -> None:
    closed = Grants.anonymous()
    assert not closed.can_subscribe and not closed.may_publish("t")
    open_hub = Grants.anonymous(subscribe=True, publish=True)
    assert open_hub.can_subscribe and open_hub.may_publish("any/topic")
    assert open_hub.may_receive("t", private=False)
    assert not open_hub.may_receive("t", private=True)  # never private updates
    assert not open_hub.may_subscribe_to("t")


def test_require_methods_raise_rfc6750_errors() -> None:
    with pytest.raises(AuthError) as caught:
        Grants.anonymous().require_subscriber()
    assert (caught.value.status, caught.value.error) == (401, None)
    assert caught.value.header() == "Bearer"
    with pytest.raises(AuthError) as caught:
        Grants.anonymous().require_publish("t")
    assert caught.value.status == 401
    with pytest.raises(AuthError) as caught:
        grants_of(detail(["subscribe"], "t")).require_publish("t")
    assert (caught.value.status, caught.value.error) == (403, "insufficient_scope")
    assert caught.value.json()["error"] == "insufficient_scope"
    with pytest.raises(AuthError) as caught:
        grants_of(detail(["publish"], "t")).require_subscribe_to("t")
    assert caught.value.status == 403
    with pytest.raises(AuthError) as caught:
        Grants.anonymous(subscribe=True).require_subscribe_to("t")
    assert caught.value.status == 401
    grants_of(detail(["publish", "subscribe"], "t")).require_publish("t")
    grants_of(detail(["subscribe"], "t")).require_subscribe_to("t")
    Grants.anonymous(subscribe=True).require_subscriber()


# -- authenticate ------------------------------------------------------------------------------


def test_authenticate_end_to_end() -> None:
    verifier = TokenVerifier(
        hmac_secret=SECRET, audience=AUDIENCE, token_type="at+jwt", required_claims=("exp",)
    )
    claims = {
        "aud": AUDIENCE,
        "exp": time.time() + 60,
        "sub": "user-1",
        "authorization_details": [
            detail(["subscribe"], {"match": "/books/:id", "matchType": "URLPattern"})
        ],
    }
    grants = authenticate(hs256(claims, typ="at+jwt"), verifier, hub_url=HUB)
    assert grants.subject == "user-1"
    assert grants.may_receive("https://example.com/books/1", private=True)
    assert not grants.may_receive("https://example.com/films/1", private=True)

    anonymous = authenticate(None, verifier, anonymous_subscribe=True)
    assert anonymous.can_subscribe and not anonymous.authenticated

    # A presented token must be valid even where none is needed; the reason stays in .detail.
    for token, reason in [
        (hs256({**claims, "exp": time.time() - 5}, typ="at+jwt"), "expired"),
        (hs256(claims), "token type"),
        (hs256({**claims, "aud": "https://other.example"}, typ="at+jwt"), "Audience"),
        (hs256(claims, secret="x" * 32, typ="at+jwt"), "Signature"),
        (jwt.encode(claims, None, algorithm="none"), "not accepted"),
        ("garbage", "malformed"),
    ]:
        with pytest.raises(AuthError) as caught:
            authenticate(token, verifier, anonymous_subscribe=True)
        assert (caught.value.status, caught.value.error) == (401, "invalid_token")
        assert caught.value.description == "the access token is not valid"
        assert reason in caught.value.detail


# -- token extraction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "cookies", "query", "expected"),
    [
        ({"Authorization": "Bearer h"}, {COOKIE: "c"}, {"access_token": "q"}, "h"),
        ({"authorization": "bearer   h "}, {}, {}, "h"),
        ({}, {COOKIE: "c"}, {"access_token": "q"}, "q"),
        ({}, {COOKIE: "c"}, {}, "c"),
        ({}, {COOKIE: ""}, {}, None),
        ({}, {"mercureAccessToken": "c"}, {}, None),  # earlier revisions' (read by admission)
        ({}, {"mercureAuthorization": "old"}, {"authorization": "old"}, None),
        ({}, {}, {}, None),
    ],
)
def test_token_precedence(headers, cookies, query, expected) -> None:
    assert token_from(headers, cookies, query) == expected


def test_token_from_custom_names_and_malformed_requests() -> None:
    assert (
        token_from({}, {"mercureAuthorization": "c"}, {}, cookie_name="mercureAuthorization") == "c"
    )
    assert token_from({}, {}, {"authorization": "q"}, query_name="authorization") == "q"
    # Another scheme is no Bearer token: the other places are read (RFC 6750 3.1).
    assert token_from({"Authorization": "Basic dXNlcjpwYXNz"}, {}, {}) is None
    assert token_from({"Authorization": "Basic dXNlcjpwYXNz"}, {}, {"access_token": "q"}) == "q"
    for headers, query in [
        ({"Authorization": "Bearer"}, {}),
        ({"Authorization": "Bearer a b"}, {}),
        ({}, {"access_token": ""}),
    ]:
        with pytest.raises(AuthError) as caught:
            token_from(headers, {COOKIE: "c"}, query)
        assert (caught.value.status, caught.value.error) == (400, "invalid_request")


def test_www_authenticate_values() -> None:
    assert www_authenticate(None) == "Bearer"
    assert (
        www_authenticate("invalid_request", "bad", realm="mercure")
        == 'Bearer realm="mercure", error="invalid_request", error_description="bad"'
    )
    assert www_authenticate("invalid_token", "a\\b\n\u00e9") == (
        'Bearer error="invalid_token", error_description="a?b??"'
    )
    error = AuthError("invalid_token", "expired")
    assert error.header(resource_metadata="https://example.com/m") == (
        'Bearer error="invalid_token", error_description="expired", '
        'resource_metadata="https://example.com/m"'
    )
    with pytest.raises(ValueError):
        www_authenticate("access_denied", "x")
    with pytest.raises(ValueError):
        AuthError("access_denied", "x")


# -- properties --------------------------------------------------------------------------------

# Topics and matchers from a small world, so that they often meet. Relative topics resolve
# against HUB (https://example.com/.well-known/mercure) for URL patterns only.
SEGMENTS = ["a", "b", "books"]
IDS = ["1", "2", "x"]


def absolute(topic: str) -> str | None:
    """The topic as a URL pattern sees it, or None when it is not an example.com path."""
    if topic.startswith("/"):
        return "https://example.com" + topic
    return topic if topic.startswith("https://example.com/") else None


@st.composite
def topics(draw) -> str:
    segment, ident = draw(st.sampled_from(SEGMENTS)), draw(st.sampled_from(IDS))
    return draw(
        st.sampled_from(
            [
                f"https://example.com/{segment}/{ident}",
                f"https://example.com/{segment}",
                f"https://example.com/{segment}/{ident}/more",
                f"/{segment}/{ident}",
                f"urn:{segment}:{ident}",
                segment,
            ]
        )
    )


# (matcher object, oracle(topic) -> bool), the oracle written without any URL machinery.
def segment_pattern(segment: str) -> tuple[dict[str, str], Any]:
    def oracle(topic: str) -> bool:
        url = absolute(topic)
        prefix = f"https://example.com/{segment}/"
        return (
            url is not None
            and url.startswith(prefix)
            and "/" not in url[len(prefix) :]
            and url != prefix
        )

    return {"match": f"https://example.com/{segment}/:id", "matchType": "URLPattern"}, oracle


def tail_pattern(segment: str) -> tuple[dict[str, str], Any]:
    def oracle(topic: str) -> bool:
        url = absolute(topic)
        return url is not None and url.startswith(f"https://example.com/{segment}/")

    return {"match": f"/{segment}/*", "matchType": "URLPattern"}, oracle


@st.composite
def matchers(draw) -> tuple[dict[str, str], Any]:
    kind = draw(st.sampled_from(["exact", "exact", "wildcard", "segment", "tail"]))
    if kind == "wildcard":
        return {"match": "*"}, lambda topic: True
    if kind == "segment":
        return segment_pattern(draw(st.sampled_from(SEGMENTS)))
    if kind == "tail":
        return tail_pattern(draw(st.sampled_from(SEGMENTS)))
    exact = draw(topics())
    return {"match": exact, "matchType": "Exact"}, lambda topic: topic == exact


@st.composite
def random_details(draw) -> list[tuple[list[str], list[tuple[dict[str, str], Any]]]]:
    return draw(
        st.lists(
            st.tuples(
                st.lists(st.sampled_from(["publish", "subscribe"]), min_size=1, max_size=2),
                st.lists(matchers(), min_size=1, max_size=3),
            ),
            max_size=4,
        )
    )


@settings(max_examples=300, deadline=None)
@given(details=random_details(), topic=topics(), private=st.booleans())
def test_no_private_update_is_receivable_without_a_matching_subscribe_grant(
    details, topic, private
) -> None:
    grants = Grants.from_claims(
        {
            "authorization_details": [
                {"type": "mercure", "actions": actions, "topics": [m for m, _ in pairs]}
                for actions, pairs in details
            ]
        },
        hub_url=HUB,
    )
    granted = any(
        "subscribe" in actions and any(oracle(topic) for _, oracle in pairs)
        for actions, pairs in details
    )
    receivable = grants.may_receive(topic, private)
    if private:
        assert receivable == granted  # never without a grant, and never wrongly withheld
    else:
        assert receivable  # public updates reach every subscriber
    published = any(
        "publish" in actions and any(oracle(topic) for _, oracle in pairs)
        for actions, pairs in details
    )
    assert grants.may_publish(topic) == published


EXACT_WORLD = st.text(alphabet="ab/:", max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    details=st.lists(
        st.tuples(
            st.frozensets(st.sampled_from(["publish", "subscribe"]), min_size=1),
            st.lists(EXACT_WORLD, min_size=1, max_size=4),
        ),
        max_size=5,
    ),
    topic=EXACT_WORLD,
    private=st.booleans(),
)
def test_exact_grants_agree_with_a_brute_force_oracle(details, topic, private) -> None:
    grants = Grants.from_claims(
        {
            "authorization_details": [
                {
                    "type": "mercure",
                    "actions": sorted(actions),
                    "topics": [{"match": m} for m in ms],
                }
                for actions, ms in details
            ]
        }
    )

    def oracle(action: str) -> bool:
        return any(
            action in actions and any(m == "*" or m == topic for m in ms) for actions, ms in details
        )

    assert grants.may_subscribe_to(topic) == oracle("subscribe")
    assert grants.may_publish(topic) == oracle("publish")
    assert grants.may_receive(topic, private) == (not private or oracle("subscribe"))


def test_docstring_examples() -> None:
    import doctest

    import sluiceway.auth.grants
    import sluiceway.auth.tokens

    for module in (sluiceway.auth.grants, sluiceway.auth.tokens):
        assert doctest.testmod(module).failed == 0, module.__name__


# -- the current revision of the draft -------------------------------------------------------

CURRENT = "https://mercure.rocks/authorization-detail"


def test_the_current_detail_type_and_matcher_names() -> None:
    grants = Grants.from_claims(
        {
            "authorization_details": [
                {
                    "type": CURRENT,
                    "actions": ["subscribe", "a-future-action"],
                    "topics": [
                        {"match": "https://example.com/books/:id", "match_type": "urlpattern"}
                    ],
                },
                {"type": CURRENT, "actions": ["only-the-future"], "topics": [{"match": "x"}]},
                {"type": "https://other.example/detail", "actions": ["publish"], "topics": "?"},
            ]
        },
        hub_url=HUB,
    )
    assert grants.may_receive("https://example.com/books/7", private=True)
    assert not grants.may_publish("x")  # an unknown action grants nothing, and spoils nothing
    assert not grants.may_subscribe_to("x")


def test_the_legacy_claim_counts_only_without_authorization_details() -> None:
    legacy = {"mercure": {"subscribe": ["*"]}}
    alone = Grants.from_claims(legacy, legacy_claims=True)
    assert alone.may_subscribe_to("anything")
    both = Grants.from_claims(
        {**legacy, "authorization_details": [detail(["subscribe"], "a")]}, legacy_claims=True
    )
    assert both.may_subscribe_to("a") and not both.may_subscribe_to("b")


def test_only_named_grants_reach_named_resources() -> None:
    grants = grants_of(
        detail(["subscribe"], "*", {"match": "/*", "match_type": "urlpattern"}),
        detail(["subscribe"], {"match": "/files/pub/*", "match_type": "urlpattern"}),
        detail(["publish"], "/jobs", {"match": "/fil(e)s/*", "match_type": "urlpattern"}),
    )
    assert grants.may_read("/files/secret.txt")  # as a topic: the wildcard covers it
    assert grants.names("subscribe", "/files/pub/a.txt")
    assert not grants.names("subscribe", "/files/secret.txt")
    assert not grants.names("subscribe", "/exports/demo")
    assert grants.names("publish", "/jobs") and not grants.names("publish", "/files/x")
    legacy = Grants.from_claims({"mercure": {"subscribe": ["/files/a"]}}, legacy_claims=True)
    assert legacy.may_subscribe_to("/files/a") and not legacy.names("subscribe", "/files/a")
    assert Grants.full().names("publish", "/anything/at/all")


def test_private_updates_with_alternate_topics() -> None:
    grants = grants_of(
        detail(["subscribe"], {"match": "https://e.com/users/42/*", "match_type": "urlpattern"})
    )
    topics = ("https://e.com/books/1", "https://e.com/users/42/books/1")
    assert grants.may_receive_any(topics, private=True)
    assert not grants.may_receive_any(topics[:1], private=True)
    assert grants.may_receive_any(topics[:1], private=False)


@pytest.mark.parametrize(
    ("claims", "headers", "options", "accepted"),
    [
        ({"exp": 2_000_000_000}, None, {}, True),
        ({}, None, {"require_exp": True}, False),
        ({}, None, {}, True),
        ({"exp": 1e308}, None, {"max_lifetime": 3600}, False),
        ({"exp": "soon"}, None, {}, False),
        ({"aud": "https://other.example"}, None, {"identities": ["https://us.example"]}, False),
        ({"aud": ["x", "https://us.example"]}, None, {"identities": ["https://us.example"]}, True),
        ({"aud": "https://us.example"}, None, {}, False),
        ({}, None, {"audience": "https://us.example"}, False),
        ({}, {"typ": "at+jwt"}, {}, True),
        ({}, {"typ": "application/AT+JWT"}, {"token_type": "at+jwt"}, True),
        ({}, {"typ": "JWT"}, {"token_type": "at+jwt"}, False),
        ({}, {"typ": "dpop+jwt"}, {}, False),
        ({}, {"typ": 7}, {}, False),
    ],
)
def test_token_claims_and_types(
    claims: dict[str, Any], headers: dict[str, Any] | None, options: dict[str, Any], accepted: bool
) -> None:
    verifier = TokenVerifier(hmac_secret=SECRET, **options)
    token = jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)
    if accepted:
        verifier.verify(token)
    else:
        with pytest.raises(TokenError):
            verifier.verify(token)
