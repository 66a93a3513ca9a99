"""Verifying OSS V4 signatures (``OSS4-HMAC-SHA256``), header and query-string forms. Pure.

The algorithm, as OSS documents it and the ``alibabacloud-oss-v2`` signer implements it::

    canonical request = METHOD \\n quote("/bucket/key", safe="/") \\n sorted raw query pairs
                        \\n "name:value\\n" for x-oss-*, content-type, content-md5 and any
                        AdditionalHeaders, sorted \\n the AdditionalHeaders names ";"-joined
                        \\n the x-oss-content-sha256 value (UNSIGNED-PAYLOAD)
    string to sign      = "OSS4-HMAC-SHA256" \\n x-oss-date \\n scope \\n hex(sha256(canonical request))
    scope               = yyyymmdd/region/oss/aliyun_v4_request
    signing key         = HMAC chain over "aliyun_v4"+secret: date, region, product, "aliyun_v4_request"

The server recomputes the signature from what arrived and compares; it never trusts the
client's idea of the canonical request. A wrong key id is ``InvalidAccessKeyId``, anything
else that does not match is ``SignatureDoesNotMatch``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote

__all__ = ["ALGORITHM", "SignatureProblem", "SignedRequest", "verify_header_auth", "verify_query_auth"]

ALGORITHM = "OSS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # OSS refuses presigned URLs valid for more than 7 days


@dataclass(frozen=True)
class SignatureProblem:
    """Why a request is refused: the OSS error code, HTTP status and message."""

    code: str
    message: str
    status: int = 403


@dataclass(frozen=True)
class SignedRequest:
    """The parts of an HTTP request the signature covers."""

    method: str
    bucket: str | None
    key: str | None
    raw_query: str  # exactly as sent: its pairs stay percent-encoded in the canonical form
    headers: Mapping[str, str]  # case-insensitive (a CIMultiDict from aiohttp)


def _signing_key(secret: str, date: str, region: str, product: str) -> bytes:
    key = ("aliyun_v4" + secret).encode()
    for part in (date, region, product, "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _canonical_uri(bucket: str | None, key: str | None) -> str:
    uri = "/"
    if bucket:
        uri += bucket + "/"
    if key:
        uri += key
    return quote(uri, safe="/")


def _encode(text: str) -> str:
    """RFC 3986 encoding, as the SDK's ``urlencode(quote_via=quote)`` does (only ``-_.~`` kept)."""
    return quote(unquote(text), safe="")


def _canonical_query(raw_query: str, drop: frozenset[str]) -> str:
    # Decode then re-encode each name and value: clients and proxies may normalize escapes on
    # the way (aiohttp turns %2F in a query into /), and the signature must survive that.
    pairs = []
    for pair in raw_query.split("&") if raw_query else []:
        name, _, value = pair.partition("=")
        if name and unquote(name) not in drop:
            pairs.append((_encode(name), _encode(value)))
    return "&".join(f"{k}={v}" if v else k for k, v in sorted(pairs))


def _canonical_headers(headers: Mapping[str, str], additional: list[str]) -> str:
    signed = []
    for name, value in headers.items():
        low = name.lower()
        if low.startswith("x-oss-") or low in ("content-type", "content-md5") or low in additional:
            signed.append((low, value.strip()))
    signed.sort(key=lambda item: item[0])
    return "".join(f"{k}:{v}\n" for k, v in signed)


def _expected_signature(
    req: SignedRequest, secret: str, *, stamp: str, scope: str, additional: list[str], drop: frozenset[str]
) -> str:
    canonical = "\n".join(
        [
            req.method.upper(),
            _canonical_uri(req.bucket, req.key),
            _canonical_query(req.raw_query, drop),
            _canonical_headers(req.headers, additional),
            ";".join(additional),
            req.headers.get("x-oss-content-sha256", UNSIGNED),
        ]
    )
    string_to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    date, region, product = [*scope.split("/"), "", "", ""][:3]
    return hmac.new(_signing_key(secret, date, region, product), string_to_sign.encode(), hashlib.sha256).hexdigest()


def _check_credential(credential: str, key_id: str) -> tuple[str, SignatureProblem | None]:
    """Split ``id/date/region/product/aliyun_v4_request`` -> (scope, problem)."""
    access_key_id, _, scope = credential.partition("/")
    if access_key_id != key_id:
        return scope, SignatureProblem(
            "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records."
        )
    parts = scope.split("/")
    if len(parts) != 4 or parts[3] != "aliyun_v4_request":
        return scope, SignatureProblem("InvalidArgument", f"invalid credential scope {scope!r}", 400)
    return scope, None


def _mismatch() -> SignatureProblem:
    return SignatureProblem(
        "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."
    )


def verify_header_auth(req: SignedRequest, key_id: str, secret: str) -> SignatureProblem | None:
    """Check ``Authorization: OSS4-HMAC-SHA256 Credential=…,[AdditionalHeaders=…,]Signature=…``."""
    auth = req.headers.get("Authorization", "")
    if not auth:
        return SignatureProblem("AccessDenied", "You have no right to access this object because of bucket acl.")
    algorithm, _, rest = auth.partition(" ")
    if algorithm != ALGORITHM:
        return SignatureProblem("InvalidArgument", f"unsupported authorization {algorithm!r}: V4 only", 400)
    fields = dict(item.strip().partition("=")[::2] for item in rest.split(","))
    scope, problem = _check_credential(fields.get("Credential", ""), key_id)
    if problem is not None:
        return problem
    stamp = req.headers.get("x-oss-date", "")
    if not stamp or stamp[:8] != scope[:8]:
        return _mismatch()
    additional = [h for h in fields.get("AdditionalHeaders", "").split(";") if h]
    expected = _expected_signature(req, secret, stamp=stamp, scope=scope, additional=additional, drop=frozenset())
    return None if hmac.compare_digest(expected, fields.get("Signature", "")) else _mismatch()


def _query_params(raw_query: str) -> dict[str, str]:
    params = {}
    for pair in raw_query.split("&") if raw_query else []:
        name, _, value = pair.partition("=")
        params[name] = unquote(value)
    return params


def verify_query_auth(
    req: SignedRequest, key_id: str, secret: str, now: datetime | None = None
) -> SignatureProblem | None:
    """Check a presigned URL: ``x-oss-signature-version``, ``-credential``, ``-date``, ``-expires``, ``-signature``."""
    params = _query_params(req.raw_query)
    if params.get("x-oss-signature-version") != ALGORITHM:
        return SignatureProblem("InvalidArgument", "x-oss-signature-version must be OSS4-HMAC-SHA256", 400)
    scope, problem = _check_credential(params.get("x-oss-credential", ""), key_id)
    if problem is not None:
        return problem
    stamp = params.get("x-oss-date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        expires = int(params.get("x-oss-expires", ""))
    except ValueError:
        return SignatureProblem("InvalidArgument", "x-oss-date or x-oss-expires is malformed", 400)
    if not 0 < expires <= MAX_PRESIGN_EXPIRES:
        return SignatureProblem("InvalidArgument", f"x-oss-expires must be 1..{MAX_PRESIGN_EXPIRES}", 400)
    if (now or datetime.now(timezone.utc)) > signed_at + timedelta(seconds=expires):
        return SignatureProblem("AccessDenied", "Request has expired.")
    additional = [h for h in params.get("x-oss-additional-headers", "").split(";") if h]
    # The signature is computed before it is appended, so it is not part of the canonical query.
    drop = frozenset({"x-oss-signature"})
    expected = _expected_signature(req, secret, stamp=stamp, scope=scope, additional=additional, drop=drop)
    return None if hmac.compare_digest(expected, params.get("x-oss-signature", "")) else _mismatch()
