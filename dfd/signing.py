"""Signed, expiring URLs for evidence kept in the local store.

Standard library only: the worker signs (``dispatcher.store.LocalStore``), the gateway
verifies and serves. A URL reads ``{public_base_url}/evidence/{key}?exp=..&sig=..``,
where ``sig`` is HMAC-SHA256 over the key and the expiry time. The secret is
``settings.url_signing_key`` or, when unset, a random key generated once and kept with
mode 0600 under ``data_dir``, so every process sharing the folder agrees on it.
"""

from __future__ import annotations

import contextlib
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
    """``{base_url}/evidence/{key}?exp=..&sig=..``."""
    query = urllib.parse.urlencode({"exp": int(exp), "sig": sign(key, exp, secret)})
    return f"{base_url.rstrip('/')}/evidence/{urllib.parse.quote(key)}?{query}"


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
