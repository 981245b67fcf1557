"""Container and stream tags that name the tool that made a file, as evidence.

``telltale_metadata(path)`` reads the tags PyAV exposes (the container's and each
stream's, without decoding) and reports, each with a plain explanation:

- ``tool``: encoder strings, handler names and creation software (FFmpeg's ``Lavf``,
  Apple's ``Core Media``, a camera's make and model, ``software`` tags);
- ``creation_time``: a creation time that is missing or reset to an epoch;
- ``reencode``: traces of a re-encode (an FFmpeg or x264 encoder on a stream).

These are facts about how the file was written, not scores: a re-encode is what every
platform does to every upload, and tags are trivially edited. They are not fused into
the verdict (no calibration has shown that they help).
"""

from __future__ import annotations

import re
from pathlib import Path

import av

from dfd.schemas import MetadataFinding

# Tags naming the software or device that wrote the file (lower-case keys).
_TOOL_TAGS = {
    "encoder": "the program that wrote the container",
    "software": "the software that made the file",
    "com.apple.quicktime.software": "the software that recorded the file (Apple)",
    "com.apple.quicktime.make": "the device maker (Apple QuickTime tag)",
    "com.apple.quicktime.model": "the device model (Apple QuickTime tag)",
    "com.android.version": "the Android version that recorded the file",
    "make": "the device maker",
    "model": "the device model",
    "comment": "a comment the writing tool left",
    "handler_name": "the handler the writing tool named the track with",
    "vendor_id": "the vendor the writing tool named",
}

# Known values, with what they say (checked in order; first match wins).
_KNOWN = (
    (
        re.compile(r"^Lavf\d"),
        "FFmpeg's libavformat muxed this file: it was written or "
        "re-muxed by FFmpeg (as generators, editors and download tools do), not by a camera",
    ),
    (re.compile(r"^Lavc\d"), "FFmpeg's libavcodec encoded this stream: it was re-encoded"),
    (re.compile(r"^(Video|Sound)Handler$"), "FFmpeg's default track name: written by FFmpeg"),
    (re.compile(r"Core Media"), "Apple's media framework wrote this track (iPhone, Mac)"),
    (re.compile(r"Google", re.I), "written by Google's pipeline (YouTube or Android)"),
    (re.compile(r"Mainconcept", re.I), "written by the MainConcept SDK (an editing suite)"),
    (re.compile(r"Adobe", re.I), "written by Adobe software"),
    (re.compile(r"HandBrake", re.I), "transcoded with HandBrake"),
)

_EPOCHS = ("1970-01-01", "1904-01-01")


def _explain(scope: str, key: str, value: str) -> str:
    if key == "encoder" and scope != "format":
        what = "the encoder of this stream"
    else:
        what = _TOOL_TAGS[key]
    for pattern, meaning in _KNOWN:
        if pattern.search(value):
            return f"{what}: {meaning}"
    return what


def telltale_metadata(path: Path) -> list[MetadataFinding]:
    """The tool-naming tags of ``path``; an unreadable file has none (probing reports it)."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError):
        return []
    with container:
        scopes = [("format", dict(container.metadata))]
        scopes += [(f"stream{s.index}", dict(s.metadata)) for s in container.streams]
    findings: list[MetadataFinding] = []
    created = False
    for scope, tags in scopes:
        for raw_key, value in tags.items():
            key = raw_key.lower()
            value = str(value).strip("\x00\x1f#").strip()
            if key in ("creation_time", "com.apple.quicktime.creationdate", "date"):
                created = True
                if value.startswith(_EPOCHS):
                    findings.append(
                        MetadataFinding(
                            key=f"{scope}.{key}",
                            value=value,
                            kind="creation_time",
                            explanation="the creation time is reset to an epoch: the writing "
                            "tool set none or cleared it",
                        )
                    )
                continue
            if key not in _TOOL_TAGS or not value:
                continue
            kind = "reencode" if re.match(r"Lavc\d|x264|x265", value) else "tool"
            findings.append(
                MetadataFinding(
                    key=f"{scope}.{key}",
                    value=value,
                    kind=kind,
                    explanation=_explain(scope, key, value),
                )
            )
    if not created:
        findings.append(
            MetadataFinding(
                key="format.creation_time",
                value=None,
                kind="creation_time",
                explanation="no creation time: cameras and phones write one; generators, "
                "screen recorders and many converters do not (and tags are easily removed)",
            )
        )
    return findings
