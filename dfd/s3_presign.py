"""Presigned S3 GET links (AWS Signature Version 4, query form), standard library only.

The worker's S3 store presigns with the ``minio`` client; the gateway, which imports no
object-store client, re-presigns the links of a stored result each time the job is read
(``gateway.evidence_links``), so they live ``evidence_url_ttl_s`` from that read. Both
sign for the same address (``s3_public_url``, else ``s3_endpoint``), path-style
(``{base}/{bucket}/{key}``, as minio does for any endpoint but AWS's own), with only the
``host`` header signed and an unsigned payload, so a link signed here is byte for byte
the one minio would make at the same moment (``tests/dfd/test_s3_presign.py`` checks it
against minio's signer). On AWS (and Alibaba's OSS) minio signs virtual-host-style links
(``https://{bucket}.s3.{region}.amazonaws.com/{key}``, the host built from the endpoint
and region by its own rules); those are re-signed for the host each link already names.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import logging
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dfd.errors import ConfigurationError

if TYPE_CHECKING:
    from dfd.settings import Settings

log = logging.getLogger(__name__)

ALGORITHM = "AWS4-HMAC-SHA256"
DEFAULT_REGION = "us-east-1"  # what minio and MinIO assume when no region is set
MAX_EXPIRES_S = 7 * 24 * 3600  # SigV4's longest presigned lifetime


def _quote(text: str, safe: str = "") -> str:
    """SigV4's URI encoding: everything but unreserved characters (and ``safe``)."""
    return urllib.parse.quote(text, safe="-_.~" + safe)


@functools.lru_cache(maxsize=16)
def _signing_key(secret_key: str, datestamp: str, region: str) -> bytes:
    key = hmac.new(f"AWS4{secret_key}".encode(), datestamp.encode(), hashlib.sha256).digest()
    for part in (region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


@dataclass(frozen=True)
class S3Presigner:
    """Signs GET links to one bucket at one address.

    Attributes:
        base_url: ``scheme://host[:port]`` clients reach the S3 API at.
        bucket: The bucket the links point into.
        access_key: The S3 access key (shown in each link's credential).
        secret_key: The S3 secret key (never shown).
        region: The region signed for.
        virtual_host: ``base_url``'s host names the bucket (``{bucket}.s3...``), so the
            path is the key alone.
    """

    base_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = DEFAULT_REGION
    virtual_host: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Presigner:
        """The presigner for the S3 store ``settings`` describe, at the address links use.

        Raises:
            ConfigurationError: ``s3_public_url`` is not a bare ``scheme://host[:port]``.
        """
        if settings.s3_public_url:
            base = settings.s3_public_url.rstrip("/")
            parts = urllib.parse.urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ConfigurationError(
                    "store: expected DFD_S3_PUBLIC_URL as scheme://host[:port], got "
                    f"{settings.s3_public_url!r}"
                )
        else:
            base = f"{'https' if settings.s3_secure else 'http'}://{settings.s3_endpoint}"
        return cls(
            base_url=base,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            region=settings.s3_region or DEFAULT_REGION,
        )

    @property
    def host(self) -> str:
        """The ``Host`` header a client sends to ``base_url`` (default ports omitted)."""
        parts = urllib.parse.urlsplit(self.base_url)
        default = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        return host if parts.port in (None, default) else f"{host}:{parts.port}"

    def url(self, key: str, expires_s: int, now: datetime | None = None) -> str:
        """A link reading ``key`` for ``expires_s`` seconds from ``now``.

        Raises:
            ValueError: ``expires_s`` is not 1..7 days in seconds (SigV4's range).
        """
        if not 1 <= expires_s <= MAX_EXPIRES_S:
            raise ValueError(f"s3 presign: expected 1..{MAX_EXPIRES_S} s, got {expires_s}")
        now = (now or datetime.now(UTC)).astimezone(UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        datestamp = amz_date[:8]
        scope = f"{datestamp}/{self.region}/s3/aws4_request"
        path = _quote(f"/{key}" if self.virtual_host else f"/{self.bucket}/{key}", safe="/")
        params = {
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{self.access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires_s),
            "X-Amz-SignedHeaders": "host",
        }
        query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(params.items()))
        canonical = f"GET\n{path}\n{query}\nhost:{self.host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = "\n".join(
            (ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        key_bytes = _signing_key(self.secret_key, datestamp, self.region)
        signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self.base_url}{path}?{query}&X-Amz-Signature={signature}"

    def link_pattern(self, hosts: tuple[str, ...]) -> re.Pattern[bytes]:
        """Presigned links into this bucket at any of ``hosts`` (``host[:port]``), as they
        appear in a JSON document: group 1 is the object key."""
        alternatives = b"|".join(re.escape(h.encode()) for h in hosts)
        return re.compile(
            rb"https?://(?:"
            + alternatives
            + rb")/"
            + re.escape(self.bucket.encode())
            + rb"/([A-Za-z0-9_.~/-]+)\?X-Amz-Algorithm=AWS4-HMAC-SHA256&[A-Za-z0-9_.~%&=-]*"
        )

    def virtual_link_pattern(self) -> re.Pattern[bytes]:
        """Virtual-host-style presigned links into this bucket on AWS or Alibaba's OSS (as
        minio signs them there): group 1 is the scheme and host, group 2 the key."""
        return re.compile(
            rb"(https?://"
            + re.escape(self.bucket.encode())
            + rb"\.[A-Za-z0-9.-]+\.(?:amazonaws\.com(?:\.cn)?|aliyuncs\.com))"
            + rb"/([A-Za-z0-9_.~/-]+)\?X-Amz-Algorithm=AWS4-HMAC-SHA256&[A-Za-z0-9_.~%&=-]*"
        )


def s3_link_resigner(
    settings: Settings, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Callable[[bytes], bytes]:
    """A function presigning afresh, valid ``evidence_url_ttl_s`` from now, every S3
    evidence link of one JSON document (links into ``s3_bucket`` at ``s3_endpoint`` or
    ``s3_public_url``); other URLs are left as they are. Works on the bytes, so a stored
    result is never parsed (keys are URL-safe: no JSON escapes in a link).

    Without ``s3_region`` the worker's client signs for the region the server names;
    each link is then re-signed for the region its own credential scope shows. Without
    S3 credentials (a gateway not given them) links are left as the worker signed them.
    """
    if not (
        settings.s3_access_key.get_secret_value() and settings.s3_secret_key.get_secret_value()
    ):
        log.warning(
            "store: no DFD_S3_ACCESS_KEY/DFD_S3_SECRET_KEY here: S3 evidence links keep the "
            "worker's signature"
        )
        return lambda raw: raw
    presigner = S3Presigner.from_settings(settings)
    by_region: dict[str, S3Presigner] = {presigner.region: presigner}
    hosts = {settings.s3_endpoint, presigner.host}
    if settings.s3_public_url:
        hosts.add(urllib.parse.urlsplit(settings.s3_public_url).netloc)
    pattern = presigner.link_pattern(tuple(sorted(hosts)))
    virtual = presigner.virtual_link_pattern()
    ttl_s = settings.evidence_url_ttl_s

    def signer_for(link: bytes) -> S3Presigner:
        if settings.s3_region:
            return presigner
        found = _CREDENTIAL.search(link)
        scope = urllib.parse.unquote(found.group(1).decode()).split("/") if found else []
        region = scope[2] if len(scope) == 5 and scope[2] else presigner.region
        if region not in by_region:
            by_region[region] = dataclasses.replace(presigner, region=region)
        return by_region[region]

    def resign(raw: bytes) -> bytes:
        if b"X-Amz-Signature" not in raw:
            return raw
        at = now()  # one moment for every link of the document

        def fresh(match: re.Match[bytes]) -> bytes:
            signer = signer_for(match.group(0))
            return signer.url(match.group(1).decode(), ttl_s, at).encode()

        def fresh_virtual(match: re.Match[bytes]) -> bytes:
            signer = dataclasses.replace(
                signer_for(match.group(0)), base_url=match.group(1).decode(), virtual_host=True
            )
            return signer.url(match.group(2).decode(), ttl_s, at).encode()

        return virtual.sub(fresh_virtual, pattern.sub(fresh, raw))

    return resign


_CREDENTIAL = re.compile(rb"X-Amz-Credential=([^&\"]*)")
