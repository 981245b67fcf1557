"""The evidence store (the ``store`` stage): where evidence images live and how people
reach them.

Two implementations of one small interface (`EvidenceStore`):

- `LocalStore`, the embedded default: files under ``settings.evidence_dir``, reached
  through the gateway with HMAC-signed, expiring URLs (``dfd.signing``).
- `S3Store`: any S3 API (MinIO in production) through the ``minio`` client; the bucket
  is created if absent with a lifecycle rule expiring objects after ``evidence_ttl_s``
  (rounded up to whole days, S3's unit), and URLs are presigned GETs that expire after
  ``evidence_url_ttl_s``.

Keys are ``<job id>/<random token>-<name>``: a prefix per job (so a job's evidence can be
deleted at once) and 128 random bits, so a key cannot be guessed from another. No link
shows a gateway-made job id: the local store's URLs mask it (``dfd.signing.public_key``),
and the S3 store, whose presigned URLs show the key, files a job under an alias of its id
(``dfd.signing.job_alias``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import mimetypes
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dfd import signing
from dfd.errors import ConfigurationError, InternalError
from dfd.jobid import is_job_id
from dispatcher.errors import StoreUnavailableError

if TYPE_CHECKING:
    from dfd.settings import Settings

log = logging.getLogger(__name__)

LIFECYCLE_RULE_ID = "dfd-evidence-expiry"
_CREDENTIAL_ERRORS = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
CONTENT_TYPES = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "application/json": ".json",
}
"""The types evidence may have, with the extension its key ends in."""


@runtime_checkable
class EvidenceStore(Protocol):
    """Keeps a job's evidence and hands out expiring URLs to it."""

    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> str:
        """Store bytes; returns the object's key."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes stored under a key."""
        ...

    def url(self, key: str) -> str:
        """A URL that reads the object until it expires."""
        ...

    def delete_job(self, job_id: str) -> int:
        """Remove every object of a job; returns how many."""
        ...

    def purge_expired(self, now: float | None = None) -> int:
        """Remove objects older than ``evidence_ttl_s``; returns how many."""
        ...


def new_key(job_id: str, name: str, content_type: str) -> str:
    """``<job id>/<32 random hex digits>-<safe name ending in the type's extension>``.

    Raises:
        InternalError: The job id is not a safe key prefix, or the type is not one
            evidence may have (no HTML or SVG: the gateway serves these files).
    """
    if not is_job_id(job_id):
        raise InternalError(f"store: job id {job_id!r} is not a safe key prefix")
    mime = content_type.split(";", 1)[0].strip().lower()
    ext = CONTENT_TYPES.get(mime)
    if ext is None:
        raise InternalError(
            f"store: expected one of {sorted(CONTENT_TYPES)}, got content type {content_type!r}"
        )
    base = _UNSAFE.sub("_", name).strip("._")[:100] or "evidence"
    # The gateway serves a file with the type its extension names: keep them in agreement.
    if mimetypes.guess_type(base)[0] != mime:
        base = (base.rsplit(".", 1)[0] if "." in base else base) + ext
    key = f"{job_id}/{secrets.token_hex(16)}-{base}"  # 128 random bits
    if not signing.is_valid_key(key):
        raise InternalError(f"store: built an invalid key {key!r}")
    return key


class LocalStore:
    """Evidence in a local folder, served by the gateway behind signed, expiring URLs."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._root = settings.evidence_dir
        self._secret = signing.load_secret(settings)
        self._clock = clock

    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> str:
        key = new_key(job_id, name, content_type)
        path = signing.evidence_path(self._settings, key)
        partial = path.with_name(f".{path.name}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            os.replace(partial, path)  # readers never see half a file
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)  # a half-written file helps nobody
            raise StoreUnavailableError(
                f"store: cannot write {key} under {self._root} ({exc})"
            ) from exc
        return key

    def path(self, key: str) -> Path:
        return signing.evidence_path(self._settings, key)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def url(self, key: str, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        exp = int(now) + self._settings.evidence_url_ttl_s
        return signing.signed_url(self._settings.public_base_url, key, exp, self._secret)

    def verify(self, key: str, exp: int | str, sig: str, now: float | None = None) -> bool:
        """Whether a URL's ``exp`` and ``sig`` are valid for ``key`` at ``now``."""
        return signing.verify(key, exp, sig, self._secret, self._clock() if now is None else now)

    def delete_job(self, job_id: str) -> int:
        if not is_job_id(job_id):
            raise InternalError(f"store: job id {job_id!r} is not a safe key prefix")
        folder = self._root / job_id
        if not folder.is_dir():
            return 0
        count = sum(1 for p in folder.iterdir() if p.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def purge_expired(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        cutoff = now - self._settings.evidence_ttl_s
        removed = 0
        if not self._root.is_dir():
            return 0
        for folder in self._root.iterdir():
            if not folder.is_dir():
                continue
            for item in folder.iterdir():
                try:
                    if item.stat().st_mtime < cutoff:
                        item.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        return removed


class S3Store:
    """Evidence in an S3 bucket (MinIO), reached through presigned GET URLs."""

    def __init__(self, settings: Settings, *, client: Any | None = None) -> None:
        self._settings = settings
        self._bucket = settings.s3_bucket
        self._client = client if client is not None else _minio_client(settings)
        # Presigning is local computation; a second client signs for the address clients use.
        self._signer = _public_signer(settings) if settings.s3_public_url else self._client
        # Presigned links show the key: a job's folder is an alias of its id.
        self._secret = signing.load_secret(settings)
        self.ensure_bucket()

    @property
    def client(self) -> Any:
        return self._client

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def expiry_days(self) -> int:
        return max(1, math.ceil(self._settings.evidence_ttl_s / 86400))

    def ensure_bucket(self) -> None:
        """Create the bucket if absent and (re)set its expiry rule."""
        from minio.commonconfig import ENABLED, Filter
        from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

        rule = Rule(
            ENABLED,
            rule_filter=Filter(prefix=""),
            rule_id=LIFECYCLE_RULE_ID,
            expiration=Expiration(days=self.expiry_days),
        )
        with self._translated(f"bucket {self._bucket}"):
            if not self._client.bucket_exists(self._bucket):
                self._client.make_bucket(self._bucket)
                log.info("store: created bucket %s", self._bucket)
            self._client.set_bucket_lifecycle(self._bucket, LifecycleConfig([rule]))

    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> str:
        key = new_key(signing.job_alias(job_id, self._secret), name, content_type)
        with self._translated(key):
            self._client.put_object(
                self._bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        return key

    def get(self, key: str) -> bytes:
        with self._translated(key):
            response = self._client.get_object(self._bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def url(self, key: str) -> str:
        with self._translated(key):
            return self._signer.presigned_get_object(
                self._bucket, key, expires=timedelta(seconds=self._settings.evidence_url_ttl_s)
            )

    def delete_job(self, job_id: str) -> int:
        if not is_job_id(job_id):
            raise InternalError(f"store: job id {job_id!r} is not a safe key prefix")
        folder = signing.job_alias(job_id, self._secret)
        with self._translated(f"{folder}/"):
            names = [
                o.object_name
                for o in self._client.list_objects(
                    self._bucket, prefix=f"{folder}/", recursive=True
                )
            ]
            self._remove(names)
        return len(names)

    def purge_expired(self, now: float | None = None) -> int:
        """Remove what the lifecycle rule has not removed yet (it runs about daily)."""
        now = time.time() if now is None else now
        cutoff = datetime.fromtimestamp(now - self._settings.evidence_ttl_s, tz=UTC)
        with self._translated("expired objects"):
            names = [
                o.object_name
                for o in self._client.list_objects(self._bucket, recursive=True)
                if o.last_modified is not None and o.last_modified < cutoff
            ]
            self._remove(names)
        return len(names)

    def _remove(self, names: list[str]) -> None:
        from minio.deleteobjects import DeleteObject

        if not names:
            return
        errors = list(self._client.remove_objects(self._bucket, [DeleteObject(n) for n in names]))
        if errors:
            raise StoreUnavailableError(
                f"store: could not delete {len(errors)} objects ({errors[0]})"
            )

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn minio and urllib3 failures into dfd errors, once, here."""
        import urllib3.exceptions
        from minio.error import MinioException, S3Error

        where = what if what.startswith("bucket") else f"s3://{self._bucket}/{what}"
        try:
            yield
        except S3Error as exc:
            if exc.code in _CREDENTIAL_ERRORS:
                raise ConfigurationError(
                    f"store: {where}: the S3 server refused the credentials ({exc.code})"
                ) from exc
            raise StoreUnavailableError(f"store: {where}: {exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(f"store: {where}: {type(exc).__name__}: {exc}") from exc


def _public_signer(settings: Settings) -> Any:
    """A client that only presigns, for ``s3_public_url``; it never connects.

    The region is given explicitly: without one, minio asks the server for the bucket's
    region, and the public address may not be reachable from the worker.
    """
    from urllib.parse import urlsplit

    from minio import Minio

    public = urlsplit(settings.s3_public_url or "")
    if public.scheme not in ("http", "https") or not public.netloc or public.path not in ("", "/"):
        raise ConfigurationError(
            f"store: expected DFD_S3_PUBLIC_URL as scheme://host[:port], got {settings.s3_public_url!r}"
        )
    return Minio(
        public.netloc,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=public.scheme == "https",
        region=settings.s3_region or "us-east-1",
    )


def _minio_client(settings: Settings) -> Any:
    import urllib3
    from minio import Minio

    if (
        not settings.s3_access_key.get_secret_value()
        or not settings.s3_secret_key.get_secret_value()
    ):
        raise ConfigurationError("store: s3 needs DFD_S3_ACCESS_KEY and DFD_S3_SECRET_KEY")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5.0, read=30.0),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=http,
    )


def make_store(settings: Settings) -> EvidenceStore:
    """The store ``settings.store`` names."""
    if settings.store == "s3":
        return S3Store(settings)
    return LocalStore(settings)
