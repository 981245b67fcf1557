"""Signed, expiring URLs for evidence kept in the local store.

Standard library only: the worker signs (``dispatcher.store.LocalStore``), the gateway
verifies and serves. A URL reads ``{public_base_url}/evidence/{key}?exp=..&sig=..``,
where ``sig`` is HMAC-SHA256 over the key and the expiry time. The secret is
``settings.url_signing_key`` or, when unset, a random key generated once and kept with
mode 0600 under ``data_dir``, so every process sharing the folder agrees on it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import re
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from dfd.errors import ConfigurationError
from dfd.jobid import JOB_ID_PATTERN

if TYPE_CHECKING:
    from dfd.settings import Settings

SECRET_FILE = "url_signing.key"

# Keys the local store hands out: "<job id>/<random token>-<name>". Nothing else is ever
# served, which also keeps "..", absolute paths and hidden files out.
_KEY = re.compile(
    rf"^{JOB_ID_PATTERN}/[A-Za-z0-9][A-Za-z0-9_-]{{15,}}-[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"
)

# What `sign` returns: a SHA-256 HMAC in lowercase hex.
_SIG = re.compile(r"[0-9a-f]{64}")


def sign(key: str, exp: int, secret: bytes) -> str:
    """The signature of one key valid until ``exp`` (Unix seconds), hex."""
    message = f"{key}\n{int(exp)}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify(key: str, exp: int | str, sig: str, secret: bytes, now: float | None = None) -> bool:
    """Whether ``sig`` signs ``key`` until ``exp`` and ``exp`` has not passed.

    Args:
        key: The object key from the URL path.
        exp: The ``exp`` query parameter (Unix seconds).
        sig: The ``sig`` query parameter.
        secret: The signing secret (`load_secret`).
        now: The current time, Unix seconds (tests inject it).
    """
    try:
        exp_int = int(exp)
    except (TypeError, ValueError):
        return False
    # A signature is 64 hex digits; anything else (non-ASCII included, which
    # hmac.compare_digest refuses with a TypeError) is simply not one.
    if not isinstance(sig, str) or not _SIG.fullmatch(sig) or not is_valid_key(key):
        return False
    if exp_int < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(sign(key, exp_int, secret), sig)


def is_valid_key(key: str) -> bool:
    """Whether a key has the shape the local store hands out (and is safe as a path)."""
    return bool(_KEY.fullmatch(key)) and ".." not in key


def signed_url(base_url: str, key: str, exp: int, secret: bytes) -> str:
    """``{base_url}/evidence/{public key}?exp=..&sig=..`` (see :func:`public_key`)."""
    shown = public_key(key, secret)
    if not is_valid_key(private_key(shown, secret)):  # only store keys: URL-safe as they are
        shown = urllib.parse.quote(shown)
    return f"{base_url.rstrip('/')}/evidence/{shown}?exp={int(exp)}&sig={sign(key, exp, secret)}"


# A job id as the gateway makes it (dfd.jobid.new_job_id): 32 hex digits. In a URL it is
# masked: "m" then the id XOR an HMAC keystream of the rest of the key (which is random
# per object), so a link shows nothing of the job it belongs to. Both directions are
# cached: a polled job's links are masked and unmasked again on every read.
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_MASKED = re.compile(r"m[0-9a-f]{32}")


def _pad(rest: str, secret: bytes) -> int:
    digest = hmac.new(secret, b"evidence-link\n" + rest.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:16], "big")


@functools.lru_cache(maxsize=8192)
def public_key(key: str, secret: bytes) -> str:
    """The key as a URL shows it: its job id masked (other ids, as ``dfd analyze``'s, stay)."""
    job_id, sep, rest = key.partition("/")
    if not sep or not _HEX_ID.fullmatch(job_id):
        return key
    return f"m{int(job_id, 16) ^ _pad(rest, secret):032x}/{rest}"


@functools.lru_cache(maxsize=8192)
def private_key(shown: str, secret: bytes) -> str:
    """The store's key behind a URL's :func:`public_key` (a key shown unmasked is returned as is)."""
    prefix, sep, rest = shown.partition("/")
    if not sep or not _MASKED.fullmatch(prefix):
        return shown
    return f"{int(prefix[1:], 16) ^ _pad(rest, secret):032x}/{rest}"


def job_alias(job_id: str, secret: bytes) -> str:
    """The folder an S3 store keeps a job's evidence under: for a gateway-made id, 32 hex
    digits derived from it with the secret (presigned S3 links show the key itself);
    other ids (``dfd analyze``'s, tests') as they are."""
    if not _HEX_ID.fullmatch(job_id):
        return job_id
    return hmac.new(secret, b"evidence-folder\n" + job_id.encode(), hashlib.sha256).hexdigest()[:32]


def key_of_url(url: str, secret: bytes) -> str | None:
    """The local store's key a signed evidence URL points at; ``None`` for another URL (S3)."""
    at = url.find("/evidence/")
    path, sep, query = url[at + len("/evidence/") :].partition("?")
    if at < 0 or not sep or "exp=" not in query:
        return None
    key = private_key(urllib.parse.unquote(path) if "%" in path else path, secret)
    return key if is_valid_key(key) else None


# A local evidence link inside a JSON document: the key (as shown) and its query.
_LINK = re.compile(rb"/evidence/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)\?exp=[0-9]+&sig=[0-9a-f]{64}")


def resign_links(document: bytes, secret: bytes, ttl_s: int, now: float | None = None) -> bytes:
    """``document`` (JSON) with every local evidence link signed afresh, valid ``ttl_s``
    from ``now``; only each link's ``exp`` and ``sig`` change.

    Works on the bytes, so a stored result is never parsed: links are plain ASCII in
    JSON (keys are URL-safe, no escapes). Other URLs (S3's presigned ones) are left as
    they were signed.
    """
    exp = int(time.time() if now is None else now) + ttl_s

    def fresh(match: re.Match[bytes]) -> bytes:
        shown = match.group(1).decode()
        key = private_key(shown, secret)
        if not is_valid_key(key):
            return match.group(0)
        return f"/evidence/{shown}?exp={exp}&sig={sign(key, exp, secret)}".encode()

    return _LINK.sub(fresh, document)


def evidence_path(settings: Settings, key: str) -> Path:
    """Where the local store keeps a key's bytes.

    Raises:
        ValueError: The key is not one the local store hands out.
    """
    if not is_valid_key(key):
        raise ValueError(f"evidence key {key!r} is not a valid key")
    return settings.evidence_dir / key


def load_secret(settings: Settings) -> bytes:
    """The signing secret: the setting, or a key generated once under ``data_dir``.

    Raises:
        ConfigurationError: The key file cannot be created or read, or is empty.
    """
    if settings.url_signing_key is not None:
        value = settings.url_signing_key.get_secret_value().encode()
        if len(value) < 16:
            raise ConfigurationError("url_signing_key: expected at least 16 characters")
        return value
    path = settings.data_dir / SECRET_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create_secret(path)
        for _ in range(50):  # a key file written by an older release may be in progress
            value = path.read_text().strip().encode()
            if value:
                return value
            time.sleep(0.01)
    except OSError as exc:
        raise ConfigurationError(
            f"url signing key {path}: cannot create or read it ({exc})"
        ) from exc
    raise ConfigurationError(f"url signing key {path}: the file is empty")


def _create_secret(path: Path) -> None:
    """Write a new key to a private temporary file, then link it into place.

    The key file appears complete or not at all: a process dying mid-write leaves no
    empty key behind. Of two processes starting together exactly one link succeeds, and
    both then read that key.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process linked its key first
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
