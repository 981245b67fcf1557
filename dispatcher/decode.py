"""Decode a video into what the detectors need: sampled frames, 16 kHz audio, 25 fps clips.

Two decoders behind one interface, ``(path, settings, duration_s) -> DecodedMedia``
(:mod:`dispatcher.media`):

- **PyAV** (:mod:`dispatcher.decode_pyav`), the CPU path;
- **DALI** (:mod:`dispatcher.decode_dali`), ``fn.decoders.video`` on a GPU.

``settings.decoder`` chooses: ``auto`` is DALI when a GPU and DALI are both present.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dfd.errors import ConfigurationError
from dfd.settings import Settings
from dispatcher.decode_dali import dali_available, decode_dali, gpu_present
from dispatcher.decode_pyav import decode_animation, decode_audio_file, decode_pyav
from dispatcher.media import DecodedMedia

Decoder = Callable[[Path, Settings, "float | None"], DecodedMedia]
DECODERS: dict[str, Decoder] = {"pyav": decode_pyav, "dali": decode_dali}


def choose_decoder(settings: Settings) -> str:
    """``pyav`` or ``dali`` for these settings; refuses ``dali`` when it cannot run."""
    if settings.decoder == "pyav":
        return "pyav"
    dali = dali_available()
    gpu = gpu_present()
    if settings.decoder == "dali":
        if not dali:
            raise ConfigurationError(
                "decoder: DFD_DECODER=dali needs NVIDIA DALI (pip install nvidia-dali-cuda120 "
                "--extra-index-url https://pypi.nvidia.com), which is not installed"
            )
        return "dali"
    return "dali" if dali and gpu else "pyav"


def decode(
    path: Path,
    settings: Settings,
    duration_s: float | None = None,
    *,
    audio_only: bool = False,
    animation: bool = False,
    progress: Callable[[float], None] | None = None,
    with_audio: bool = True,
) -> DecodedMedia:
    """Decode ``path`` with the decoder ``settings.decoder`` selects (an audio file,
    ``audio_only``, with PyAV: DALI reads no audio; an animated WebP, ``animation``, with
    Pillow); ``progress`` gets the PyAV decoder's 0..1 as it goes.

    Args:
        path: a file that probing accepted.
        settings: sampling rate, clip count, size cap, decoder choice.
        duration_s: the probed duration; places the lip-sync clips.
        progress: called with 0..1 as the stream is read (PyAV; DALI decodes in one call).
        with_audio: False: the PyAV decoder leaves the audio track unread (``audio`` None;
            the overlapped pipeline reads it in its own branch).

    Raises:
        UnsupportedMediaError: no video stream.
        CorruptMediaError: nothing decodable, or too many broken packets.
        ConfigurationError: DALI asked for but missing.
    """
    if audio_only:
        return decode_audio_file(path, settings, duration_s)
    if animation:
        return decode_animation(path, settings, duration_s)
    name = choose_decoder(settings)
    if name == "pyav" and (progress is not None or not with_audio):
        return decode_pyav(path, settings, duration_s, progress=progress, with_audio=with_audio)
    return DECODERS[name](path, settings, duration_s)
