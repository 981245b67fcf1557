"""Find a published weight file: the weights folder, the local cache, or the public address.

``manifest.json`` beside this module lists every file dfd may load with its public
address, SHA-256 and licence. :func:`resolve_weight` looks a file up in this order:

1. ``settings.weights_dir`` (a folder laid out like the manifest, e.g. a shared mount);
2. the cache ``settings.weights_cache_dir`` (filled by earlier downloads);
3. the public address: streamed to a temporary file in the cache, checked against the
   manifest's SHA-256 and only then renamed into place, so the cache never holds a
   partial or wrong file.

Imports no ML library (``httpx`` only when downloading).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dfd.errors import ConfigurationError
from dfd.settings import Settings

log = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class WeightFile:
    """One manifest row.

    Attributes:
        file: path relative to the weights folder (``mesonet/Meso4_DF.h5``).
        url: public address it is downloaded from.
        sha256: expected hex digest of its bytes.
        licence: the licence it is published under.
        what: a few words on what it is.
    """

    file: str
    url: str
    sha256: str
    licence: str
    what: str = ""


@cache
def manifest() -> dict[str, WeightFile]:
    """The project's weights manifest, keyed by relative path."""
    doc = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    return {row["file"]: WeightFile(**row) for row in doc["files"]}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weight(
    relpath: str, settings: Settings, *, files: Mapping[str, WeightFile] | None = None
) -> Path:
    """Local path of the weight file ``relpath``, downloading it if it is nowhere local.

    Args:
        relpath: a manifest name such as ``"mesonet/Meso4_DF.h5"`` (as in ``ModelSpec.weights``).
        settings: where to look (``weights_dir``, ``weights_cache_dir``) and fetch timeouts.
        files: the manifest to use; defaults to the project's ``manifest.json``.

    Raises:
        ConfigurationError: the name is not in the manifest, the file is absent locally and
            cannot be downloaded (offline), or the download's checksum does not match.
    """
    files = manifest() if files is None else files
    entry = files.get(relpath)
    if entry is None:
        known = ", ".join(sorted(files))
        raise ConfigurationError(f"weights: {relpath!r} is not in the manifest; known: {known}")
    if settings.weights_dir is not None:
        candidate = Path(settings.weights_dir) / relpath
        if candidate.is_file():
            got = _sha256_once(candidate)
            if got != entry.sha256:
                raise ConfigurationError(
                    f"weights: {candidate} has SHA-256 {got}, expected {entry.sha256} "
                    f"({relpath} from {entry.url}); refusing to use it: a truncated or "
                    "different file would be exported and served under this checkpoint's name"
                )
            return candidate
    cached = settings.weights_cache_dir / relpath
    if cached.is_file():
        if _sha256_once(cached) == entry.sha256:
            return cached
        # A damaged cache entry (a disk error, an edit): fetch it again.
        log.warning("weights: %s does not match its SHA-256; downloading it again", cached)
        cached.unlink()
    _download(entry, cached, settings)
    return cached


# (path, size, mtime) -> SHA-256: a file is hashed once per process unless it changes.
_hashed: dict[tuple[str, int, int], str] = {}


def _sha256_once(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hashed:
        _hashed[key] = sha256_of(path)
    return _hashed[key]


def pull_all(settings: Settings, checkpoints: Iterable[str] | None = None) -> dict[str, Path]:
    """Resolve (and download where needed) every weight file the given checkpoints use.

    Args:
        settings: as for :func:`resolve_weight`.
        checkpoints: spec names (``meso4_df``); ``None`` means every registered checkpoint
            whose weights dfd provides (not those the user fetches).

    Returns:
        Relative manifest name -> local path.
    """
    from dfd.specs import SPECS, spec

    names = (
        [n for n, s in SPECS.items() if not s.fetched_by_user]
        if checkpoints is None
        else list(checkpoints)
    )
    paths: dict[str, Path] = {}
    for name in names:
        for relpath in spec(name).weights:
            if relpath not in paths:
                paths[relpath] = resolve_weight(relpath, settings)
    return paths


# A download killed outright (SIGKILL, power) leaves its .part file; one older than this
# is nobody's any more (a live download in another process is younger).
_STALE_PART_S = 3600


def _sweep_parts(dest: Path) -> None:
    now = time.time()
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > _STALE_PART_S:
                part.unlink()


def _download(entry: WeightFile, dest: Path, settings: Settings) -> None:
    """Stream ``entry.url`` into ``dest`` through a checked temporary file."""
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    _sweep_parts(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    timeout = httpx.Timeout(settings.fetch_read_timeout_s, connect=settings.fetch_connect_timeout_s)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with httpx.stream("GET", entry.url, follow_redirects=True, timeout=timeout) as resp:
                    if resp.status_code != 200:
                        raise ConfigurationError(
                            f"weights: {entry.file} is missing locally and {entry.url} "
                            f"answered HTTP {resp.status_code}; put the file in DFD_WEIGHTS_DIR"
                        )
                    for chunk in resp.iter_bytes(_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
            except httpx.HTTPError as exc:
                where = settings.weights_dir or "(DFD_WEIGHTS_DIR unset)"
                raise ConfigurationError(
                    f"weights: {entry.file} is not in {where} nor in the cache "
                    f"{settings.weights_cache_dir}, and downloading it from {entry.url} failed "
                    f"({type(exc).__name__}: {exc}); offline machines must set DFD_WEIGHTS_DIR"
                ) from exc
        got = digest.hexdigest()
        if got != entry.sha256:
            raise ConfigurationError(
                f"weights: {entry.file} downloaded from {entry.url} has SHA-256 {got}, "
                f"expected {entry.sha256}; refusing to use it"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
