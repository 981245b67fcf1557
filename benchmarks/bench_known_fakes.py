"""Known fakes: match rates of changed re-uploads, false matches, and the time added per video.

    python -m benchmarks.bench_known_fakes [--media-dir DIR] [--runs 3]

Rates: every GRID clip and every video of ``media_dir/wild`` is hashed as the pipeline
hashes it (PyAV decode at 1 fps, PDQ of each frame and of its centre), then re-encoded
four ways with ffmpeg (a low bitrate, half size, trimmed at the start, a logo box in a
corner); wild clips are cut to their first ``--max-seconds`` first (a 2-core machine). A changed copy must match its original and nothing else; two different videos
must not match. Time: provenance, tell-tale tags, hashing and a look-up in a bank of
100 entries on the 30 s 1080p benchmark clip, against that clip's end-to-end time.
Writes ``benchmarks/results/known_fakes.{json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.bench_stages import RESULTS, add_clip_arguments, build_clip, machine
from dfd.known_fakes import KnownFake, MediaHashes
from dfd.settings import Settings

_FFMPEG = ("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y")
LOGO = "drawbox=x=iw-iw/5-8:y=8:w=iw/5:h=ih/10:color=white@0.8:t=fill"
# The end-to-end p50 of the 30 s 1080p clip (benchmarks/results/e2e_cpu.md), seconds.
E2E_P50_S = 4.19


def _cut(src: Path, out: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``src``, near-lossless: what the bank holds in this benchmark."""
    path = out / f"{src.stem}.cut.mp4"
    subprocess.run(
        [*_FFMPEG, "-i", str(src), "-t", str(seconds), "-an", "-c:v", "libx264",
         "-preset", "ultrafast", "-crf", "12", "-pix_fmt", "yuv420p",
         "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", str(path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return path


def _variants(src: Path, out: Path, duration_s: float) -> dict[str, Path]:
    trim = 2.0 if duration_s >= 6 else 0.6
    recipes = {
        "low_bitrate": ["-b:v", "150k"],
        "half_size": ["-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2"],
        f"trimmed_{trim:g}s": ["-ss", str(trim)],
        "logo": ["-vf", f"{LOGO},scale=trunc(iw/2)*2:trunc(ih/2)*2"],
    }
    made = {}
    for name, args in recipes.items():
        path = out / f"{src.stem}.{name}.mp4"
        subprocess.run(
            [*_FFMPEG, "-i", str(src), *args, "-an", "-c:v", "libx264", "-preset", "ultrafast",
             "-pix_fmt", "yuv420p", str(path)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        made[name] = path
    return made


def _hash(path: Path, settings: Settings) -> tuple[MediaHashes, float]:
    from dispatcher.decode import decode
    from dispatcher.known_fakes import hash_frames

    media = decode(path, settings)
    return hash_frames(media.frames, settings), media.duration_s


def _entry(i: int, label: str, hashes: MediaHashes) -> KnownFake:
    return KnownFake(id=f"{i:016x}", label=label, created_at="2026-12-01", hashes=hashes)


def rates(media_dir: Path, settings: Settings, tmp: Path, max_s: float) -> dict[str, object]:
    from dispatcher.known_fakes import find_matches

    clips = sorted((media_dir / "grid").glob("*.mpg"))
    with (media_dir / "wild" / "labels.csv").open() as f:
        clips += [media_dir / "wild" / r["path"] for r in csv.DictReader(f) if r["kind"] != "audio"]
    bank, skipped, durations, sources = [], [], {}, {}
    for clip in clips:
        try:
            source = clip if clip.suffix == ".mpg" else _cut(clip, tmp, max_s)
            hashes, duration = _hash(source, settings)
        except Exception as exc:  # a clip the decoder refuses is reported, not fatal
            skipped.append(f"{clip.name}: {exc}")
            continue
        if hashes.frames:
            bank.append(_entry(len(bank), str(clip.relative_to(media_dir)), hashes))
            durations[bank[-1].label] = duration
            sources[bank[-1].label] = source
        else:
            skipped.append(f"{clip.name}: no frame good enough to hash")
    kept, missed, wrong, by_change = 0, [], [], {}
    for entry in bank:
        variants = _variants(sources[entry.label], tmp, durations[entry.label])
        for change, path in variants.items():
            copy, _ = _hash(path, settings)
            found = [m.label for m in find_matches(copy, bank, settings)]
            key = change.split("_")[0] if change.startswith("trimmed") else change
            stats = by_change.setdefault(key, [0, 0])
            stats[1] += 1
            if entry.label in found:
                kept += 1
                stats[0] += 1
            else:
                missed.append(f"{entry.label} ({change})")
            wrong += [f"{entry.label} ({change}) -> {o}" for o in found if o != entry.label]
    pairs = false_pairs = 0
    matched_pairs = set()
    for entry in bank:
        for m in find_matches(entry.hashes, bank, settings):
            if m.label != entry.label:
                false_pairs += 1
                matched_pairs.add(" <-> ".join(sorted((entry.label, m.label))))
        pairs += len(bank) - 1
    total = 4 * len(bank)
    return {
        "videos": len(bank),
        "skipped": skipped,
        "changed_copies": total,
        "copies_matched": kept,
        "match_rate": round(kept / total, 4) if total else None,
        "by_change": {k: f"{v[0]}/{v[1]}" for k, v in by_change.items()},
        "missed": missed,
        "copies_matching_another_video": wrong,
        "different_video_pairs": pairs,
        "different_pairs_matched": false_pairs,
        "false_match_rate": round(false_pairs / pairs, 5) if pairs else None,
        "different_videos_matched": sorted(matched_pairs),
    }


def timing(clip: Path, settings: Settings, runs: int, bank: list[KnownFake]) -> dict[str, object]:
    from dispatcher.decode import decode
    from dispatcher.known_fakes import find_matches, hash_frames
    from dispatcher.metadata import telltale_metadata
    from dispatcher.provenance import read_provenance

    media = decode(clip, settings)
    provenance_ms, hashes_ms = [], []
    for _ in range(runs + 1):  # the first run warms caches and imports
        started = time.perf_counter()
        read_provenance(clip, settings)
        telltale_metadata(clip)
        provenance_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        find_matches(hash_frames(media.frames, settings), bank, settings)
        hashes_ms.append((time.perf_counter() - started) * 1000)
    p, h = statistics.median(provenance_ms[1:]), statistics.median(hashes_ms[1:])
    return {
        "clip": "30 s 1920x1080 h264 + aac",
        "frames": len(media.frames),
        "bank_entries": len(bank),
        "provenance_and_tags_ms": round(p, 1),
        "hash_and_lookup_ms": round(h, 1),
        "added_ms": round(p + h, 1),
        "e2e_p50_s": E2E_P50_S,
        "added_share_of_e2e": round((p + h) / (E2E_P50_S * 1000), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_clip_arguments(parser)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--max-seconds", type=float, default=6.0, help="wild clips are cut to this length"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dfd-bench-kf-") as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings(data_dir=tmp / "data", decoder="pyav")
        found = rates(args.media_dir, settings, tmp, args.max_seconds)
        clip = args.clip or build_clip(args.media_dir, tmp / "clip.mp4")
        grid_hashes, _ = _hash(args.media_dir / "grid" / "bbaf2n.mpg", settings)
        bank = [_entry(i, f"entry {i}", grid_hashes) for i in range(100)]
        took = timing(clip, settings, args.runs, bank)
    report = {"machine": machine(), "rates": found, "time": took}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "known_fakes.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "### Known fakes: match rates and time added",
        "",
        f"Command: `python -m benchmarks.bench_known_fakes`. Settings: distance <= "
        f"{settings.known_fake_max_distance} bits, share >= {settings.known_fake_min_share}.",
        "",
        f"- changed re-uploads matched: {found['copies_matched']}/{found['changed_copies']} "
        f"({found['match_rate']}) over {found['videos']} videos; by change {found['by_change']}",
        f"- different videos matched: {found['different_pairs_matched']}/"
        f"{found['different_video_pairs']} ordered pairs ({found['false_match_rate']}); "
        f"changed copies matching another video: {len(found['copies_matching_another_video'])}",
        f"- the different videos that matched: {'; '.join(found['different_videos_matched']) or 'none'}",
        f"- missed: {', '.join(found['missed']) or 'none'}",
        f"- time added on the 30 s 1080p clip ({took['frames']} frames, bank of "
        f"{took['bank_entries']}): provenance and tags {took['provenance_and_tags_ms']} ms, "
        f"hashes and look-up {took['hash_and_lookup_ms']} ms: {took['added_ms']} ms, "
        f"{took['added_share_of_e2e'] * 100:.1f} % of the {E2E_P50_S} s end-to-end p50",
    ]
    if found["skipped"]:
        lines.append(f"- skipped: {'; '.join(found['skipped'])}")
    (RESULTS / "known_fakes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
