"""The local Triton, started only when no ``DFD_TRITON_URL`` is configured.

The one place that decides "use ``DFD_TRITON_URL``, or start one here" (for Redis:
:func:`cli.local_redis.start_redis`): ``dfd serve``, ``dfd demo`` and ``dfd analyze`` go
through it. A local Triton serves the rendering ``DFD_TRITON_TARGET`` names, built first (in a child
``dfd models build``, so torch never loads in this process) when it is missing or does not
match the settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cli.local_triton import LocalTriton
from dfd.errors import ConfigurationError
from dfd.settings import Settings


def dfd_command(*args: str) -> list[str]:
    """``dfd ARGS`` run by this interpreter, so children use the same environment."""
    return [sys.executable, "-m", "cli.main", *args]


def repository_ready(settings: Settings, target: str) -> bool:
    """Whether the built repository serves the models (and threads) the settings ask for."""
    from export.triton_repo import repository_current  # the check reads no torch

    return repository_current(settings, target)  # type: ignore[arg-type]


def build_repository(settings: Settings, target: str, log: Callable[[str], None]) -> Path:
    """Build the ``target`` repository unless it is current; returns its folder."""
    folder = settings.repository_dir(target)
    if repository_ready(settings, target):
        return folder
    log(
        f"building the {target} model repository (weights, ONNX export): first run, "
        "or the models changed"
    )
    env = dict(os.environ, DFD_DATA_DIR=str(settings.data_dir.resolve()))
    done = subprocess.run(dfd_command("models", "build", "--target", target), env=env)
    if done.returncode != 0 or not repository_ready(settings, target):
        raise ConfigurationError(
            f"expected `dfd models build --target {target}` to build {folder}, "
            f"got exit status {done.returncode}"
        )
    return folder


def start_triton(settings: Settings, log: Callable[[str], None]) -> tuple[str, LocalTriton | None]:
    """``DFD_TRITON_URL``, or a local Triton on the ``DFD_TRITON_TARGET`` rendering (then
    also returned: the caller stops it)."""
    if settings.triton_url:
        return settings.triton_url, None
    target = settings.triton_target
    folder = build_repository(settings, target, log)
    log(f"starting triton ({target} repository {folder.resolve()})")
    triton = LocalTriton(settings, folder).start()
    return triton.grpc_url, triton
