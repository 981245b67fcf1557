"""Build the labelled calibration cases that ``dfd models calibrate`` fits on, beside the wild set.

    .venv/bin/python -m benchmarks.make_calibration_set OUT [--media-dir DIR] [--no-wild-audio]

Writes media files and a ``labels.csv`` (the scorecard's columns) into ``OUT``, which
``python -m benchmarks.bench_detection OUT --tag calibration`` then scores. Nothing here is
committed: the files are made from ``$DFD_MEDIA_DIR`` with ffmpeg and espeak-ng, the same
every time (fixed texts, voices, seeds and encoder settings).

Cases (kind: what is manipulated):

- ``original``: the GRID clips as they are (real);
- ``reencode``, ``noise``, ``trim``: GRID clips re-encoded with H.264 at 150k-1000k,
  with added video and audio noise, or cut to 1.2-2 s (real: a transformation is not a
  manipulation);
- ``dub``: a GRID clip with its voice replaced by espeak-ng speech, some re-encoded at a
  low bitrate (fake: the voice is synthetic and the lips do not match it);
- ``audio_swap``: a GRID clip with another GRID clip's (real) voice (fake: lips do not match);
- ``audio``: audio files wrapped as a video with a black picture, so that today's pipeline
  (which refuses audio-only files) scores their voice: the ASVspoof 2019 LA utterances,
  espeak-ng speech (fake), GRID voices (real) and, unless ``--no-wild-audio``, the wild
  set's audio files (their own labels).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("path", "label", "kind", "method", "has_audio", "has_face_guess", "source")
SENTENCES = (
    "bin blue at f two now",
    "lay green by d seven please",
    "place red in s nine again",
    "set white with p four soon",
    "bin red at z one now",
    "lay white in k eight again",
    "place blue by x three please",
    "set green with a five soon",
    "bin white by h six now",
    "lay red at q zero please",
    "place green in j two soon",
)
VOICES = ("en", "en-us", "en+f3", "en-gb-x-rp", "en+m3", "en-us+f2")


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=300,
    )


def _espeak(text: str, voice: str, out: Path) -> Path:
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "160", "-w", str(out), text], check=True, timeout=60
    )
    return out


def _wrap_audio(src: Path, out: Path) -> None:
    """``src``'s audio under a black 320x240 picture at 5 fps (MKV, FLAC: lossless audio)."""
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=black:s=320x240:r=5", "-i", str(src),
        "-map", "0:v", "-map", "1:a", "-shortest",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-c:a", "flac", str(out),
    )  # fmt: skip


def _dub(video: Path, audio: Path, out: Path, video_kbps: int | None = None) -> None:
    """``video``'s picture with ``audio`` (padded or cut to the picture's length)."""
    venc = ["-c:v", "libx264", "-preset", "veryfast"]
    venc += ["-b:v", f"{video_kbps}k"] if video_kbps else ["-crf", "18"]
    _ffmpeg(
        "-i", str(video), "-i", str(audio), "-map", "0:v", "-map", "1:a",
        "-af", "apad", "-shortest", *venc, "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", str(out),
    )  # fmt: skip


def build(out: Path, media: Path, wild_audio: bool = True) -> list[dict[str, str]]:
    """Make every case under ``out``; returns the rows of its ``labels.csv``."""
    rows: list[dict[str, str]] = []

    def add(path: Path, label: str, kind: str, method: str, face: str = "yes") -> None:
        rows.append(
            dict(
                path=str(path.relative_to(out)), label=label, kind=kind, method=method,
                has_audio="yes", has_face_guess=face, source="generated",
            )
        )  # fmt: skip

    for sub in ("original", "reencode", "noise", "trim", "dub", "audio_swap", "audio"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    grid = sorted((media / "grid").glob("*.mpg"))
    if len(grid) < 4:
        raise FileNotFoundError(
            f"make_calibration_set: expected the GRID clips in {media / 'grid'}"
        )
    for i, clip in enumerate(grid):
        stem = clip.stem
        orig = out / "original" / f"{stem}.mpg"
        if not orig.exists():
            orig.symlink_to(clip)
        add(orig, "real", "original", "GRID original")

        kbps = (150, 400, 1000)[i % 3]
        dst = out / "reencode" / f"{stem}_h264_{kbps}k.mp4"
        _ffmpeg("-i", str(clip), "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{kbps}k",
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(dst))  # fmt: skip
        add(dst, "real", "reencode", f"GRID re-encoded H.264 {kbps}k")

        if i % 2 == 0:
            dst = out / "noise" / f"{stem}_noise.mp4"
            _ffmpeg(
                "-i", str(clip), "-f", "lavfi", "-i", f"anoisesrc=a=0.02:c=pink:seed={i + 1}",
                "-filter_complex", "[0:a][1:a]amix=inputs=2:duration=first:normalize=0[a];"
                f"[0:v]noise=alls=12:allf=t+u:all_seed={i + 1}[v]",
                "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "veryfast",
                "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(dst),
            )  # fmt: skip
            add(dst, "real", "noise", "GRID with pink audio noise and video grain")
        if i % 2 == 1:
            length = (1.2, 2.0)[(i // 2) % 2]
            dst = out / "trim" / f"{stem}_trim{length:.1f}s.mp4"
            _ffmpeg("-ss", "0.5", "-i", str(clip), "-t", str(length), "-c:v", "libx264",
                    "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(dst))  # fmt: skip
            add(dst, "real", "trim", f"GRID cut to {length:.1f} s")

        voice = VOICES[i % len(VOICES)]
        speech = _espeak(SENTENCES[i % len(SENTENCES)], voice, out / "dub" / f"{stem}_tts.wav")
        dst = out / "dub" / f"{stem}_dub_{voice.replace('+', '_')}.mp4"
        _dub(clip, speech, dst, video_kbps=300 if i % 3 == 0 else None)
        add(dst, "fake", "dub", f"GRID dubbed with espeak-ng ({voice})")

        other = grid[(i + 3) % len(grid)]
        dst = out / "audio_swap" / f"{stem}_voice_of_{other.stem}.mp4"
        _dub(clip, other, dst)
        add(dst, "fake", "audio_swap", f"GRID with the voice of {other.stem}")

        if i < 6:
            dst = out / "audio" / f"tts_{stem}.mkv"
            _wrap_audio(speech, dst)
            add(dst, "fake", "audio", f"espeak-ng ({voice}) under a black picture", "no")
        if i >= 6:
            dst = out / "audio" / f"grid_voice_{stem}.mkv"
            _wrap_audio(clip, dst)
            add(dst, "real", "audio", "GRID voice under a black picture", "no")
        speech.unlink()

    asv = media / "asvspoof2019_la"
    for sub, label in (("bonafide", "real"), ("spoof", "fake")):
        for src in sorted((asv / sub).glob("*.flac")):
            dst = out / "audio" / f"asvspoof_{src.stem}.mkv"
            _wrap_audio(src, dst)
            add(dst, label, "audio", f"ASVspoof 2019 LA {sub} under a black picture", "no")
    if wild_audio:
        with (media / "wild" / "labels.csv").open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row["kind"] != "audio":
                    continue
                src = media / "wild" / row["path"]
                dst = out / "audio" / f"wild_{Path(row['path']).stem}.mkv"
                _wrap_audio(src, dst)
                add(
                    dst,
                    row["label"],
                    "audio",
                    f"wild: {row['method']} (under a black picture)",
                    "no",
                )

    with (out / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--media-dir",
        type=Path,
        default=Path(os.environ.get("DFD_MEDIA_DIR", ROOT.parent / "shared" / "media")),
    )
    parser.add_argument("--no-wild-audio", action="store_true")
    args = parser.parse_args(argv)
    rows = build(args.out.resolve(), args.media_dir.resolve(), wild_audio=not args.no_wild_audio)
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[f"{r['kind']}/{r['label']}"] = kinds.get(f"{r['kind']}/{r['label']}", 0) + 1
    print(
        f"{args.out}/labels.csv: {len(rows)} items: "
        + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
