"""How well ``dispatcher.voice`` finds a change of voice, and how often it invents one.

    python -m benchmarks.bench_voice_changes [--out benchmarks/results/voice_changes.md]

The pipeline's own steps on real speech: silero-vad finds the speech runs
(``dispatcher.speech``), :func:`dispatcher.voice.voice_segments` cuts them into segments
of at least 1.6 s, the GE2E encoder (our ONNX export, one-thread onnxruntime, as the
``cpu`` repository runs it) embeds each, and each rule under test decides.

- joins (a change must be found, within one segment of the join): every ordered pair of
  two different GRID speakers, their 16 kHz tracks back to back (the same samples as
  ``ffmpeg -f concat``); and pairs of longer real recordings of the wild set by different
  people.
- one voice (any change is false): each GRID clip, the two clips of one GRID speaker
  back to back, each real recording with speech in ``media/wild`` (interviews, radio
  addresses, read speech, the real videos), and pairs of real recordings by one person.

Prints and writes a markdown table per rule (group size, threshold): joins found, clips
with a false change, and the encoder's cost per segment.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.ort_models import OrtModels
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE
from dispatcher.decode_pyav import read_audio
from dispatcher.speech import find_speech
from dispatcher.voice import (
    CHANGE_GROUP,
    CHANGE_SIMILARITY,
    MIN_SEGMENT_S,
    VoiceSegment,
    decide,
    embed_segments,
    group_similarities,
    voice_segments,
)

# Who speaks in the wild set's real recordings (from labels.csv's descriptions and the
# file names); files not named here are each their own speaker.
WILD_SPEAKERS = {
    "audio/real/ljspeech_LJ001-0002.wav": "lj",
    "audio/real/ljspeech_LJ001-0004.wav": "lj",
    "audio/real/ljspeech_LJ028-0505.wav": "lj",
    "audio/real/resemblyzer_trump_real_dB0Za__55-Q.mp3": "trump",
    "audio/real/resemblyzer_trump_real_fDQuO1nm_NY.mp3": "trump",
    "audio/real/resemblyzer_trump_real_mg8ST-ymYv0.mp3": "trump",
    "audio/real/resemblyzer_trump_real_pMgjwBgCZIw.mp3": "trump",
    "audio/real/vctk_p225_001_mic1.flac": "p225",
    "audio/real/vctk_p225xp259_source.wav": "p225",
    "talking_head/real/hdtf_aoc_short_gt.mp4": "aoc",
    "talking_head/real/hdtf_wda_alexandriaocasiocortez_000.mp4": "aoc",
}
GRID_SAME = ("id2_vcd_swwp2s", "pwij3p")  # one man (tests/fixtures/voice.py)
# (least speech a segment holds, group, threshold); segments are cut once with the
# smallest minimum and the shorter ones dropped for a larger.
RULES = [(m, g, t) for m in (1.2, 1.6) for g in (1, 2) for t in (0.55, 0.60, 0.65, 0.70, 0.75)]
CUT_MIN_S = min(m for m, _, _ in RULES)


def voice_models(settings: Settings) -> OrtModels:
    """The speech gate and the voice encoder in one-thread onnxruntime sessions."""
    return OrtModels.exported(settings, {"vad": "silero_vad", "voice": "resemblyzer"})


@dataclass(frozen=True)
class Case:
    name: str
    audio: np.ndarray
    joins_s: tuple[float, ...]  # where the voice changes (empty: one voice)


def grid_cases(media: Path) -> list[Case]:
    clips = {p.stem: read_audio(p) for p in sorted((media / "grid").glob("*.mpg"))}
    cases = [Case(f"grid/{n}", a, ()) for n, a in clips.items()]
    for a, b in itertools.permutations(clips, 2):
        same = {a, b} == set(GRID_SAME)
        joined = np.concatenate([clips[a], clips[b]])
        joins = () if same else (clips[a].size / AUDIO_RATE,)
        cases.append(Case(f"grid/{a}+{b}", joined, joins))
    return cases


def wild_cases(media: Path) -> list[Case]:
    with (media / "wild" / "labels.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == "real" and r["has_audio"] == "yes"]
    tracks = {}
    for r in rows:
        audio = read_audio(media / "wild" / r["path"])
        if audio is not None and audio.size:
            tracks[r["path"]] = audio
    cases = [Case(f"wild/{p}", a, ()) for p, a in tracks.items()]
    long = [p for p, a in tracks.items() if a.size >= 4 * AUDIO_RATE]
    for a, b in itertools.combinations(long, 2):
        same = WILD_SPEAKERS.get(a, a) == WILD_SPEAKERS.get(b, b)
        joined = np.concatenate([tracks[a], tracks[b]])
        joins = () if same else (tracks[a].size / AUDIO_RATE,)
        cases.append(Case(f"wild/{Path(a).stem}+{Path(b).stem}", joined, joins))
    return cases


def is_hit(time_s: float, join_s: float, segments: Sequence[VoiceSegment]) -> bool:
    """Whether a change at ``time_s`` marks the join: it is the start of the first segment
    after the join, or of the one after a segment holding both voices (join inside it)."""
    after = [s for s in segments if s.start_s >= join_s - 0.25]
    inside = [s for s in segments if s.start_s < join_s - 0.25 < s.end_s]
    allowed = {after[0].start_s} if after else set()
    if inside:
        allowed.add(inside[0].start_s)
    return time_s in allowed


def evaluate(cases: Sequence[Case], client: OrtModels) -> dict:
    prepared, segments_total = [], 0
    for case in cases:
        speech = find_speech(case.audio, client)
        segments = voice_segments(speech.segments, min_s=CUT_MIN_S)
        emb = embed_segments(case.audio, segments, client)
        segments_total += len(segments)
        prepared.append((case, segments, emb))
    return {
        "prepared": prepared,
        "segments": segments_total,
        "voice_s": client.cpu_s.get("voice", 0.0),
    }


def score_rules(res: dict) -> dict:
    prepared = res["prepared"]
    rows = []
    for min_s, group, threshold in RULES:
        found = joins = false_joins = false_singles = singles = unembeddable = 0
        for case, all_segments, all_emb in prepared:
            keep = [k for k, s in enumerate(all_segments) if s.speech_s >= min_s - 1e-9]
            segments = [all_segments[k] for k in keep]
            emb = all_emb[keep]
            changes = decide(emb, segments, threshold, group).changes if len(segments) else ()
            if case.joins_s:
                joins += 1
                if len(segments) < 2:
                    unembeddable += 1
                # a hit: a change reported at the segment boundary nearest the join
                hit = [t for t, _ in changes if is_hit(t, case.joins_s[0], segments)]
                found += bool(hit)
                false_joins += len(changes) > len(hit[:1])
            else:
                singles += 1
                false_singles += bool(changes)
        rows.append(
            {
                "min_s": min_s,
                "group": group,
                "threshold": threshold,
                "joins": joins,
                "found": found,
                "unembeddable": unembeddable,
                "singles": singles,
                "false_singles": false_singles,
                "false_joins": false_joins,
            }
        )
    lowest: dict[tuple[float, int], float | None] = {}
    for min_s, group, _ in RULES:
        sims = []
        for case, all_segments, all_emb in prepared:
            keep = [k for k, s in enumerate(all_segments) if s.speech_s >= min_s - 1e-9]
            if not case.joins_s and len(keep) > 1:
                sims += list(group_similarities(all_emb[keep], group))
        lowest[(min_s, group)] = min(sims) if sims else None
    return {**res, "rows": rows, "lowest": lowest}


def markdown(results: dict[str, dict]) -> str:
    lines = [
        "# Voice changes: joins found, false changes on one voice",
        "",
        "`python -m benchmarks.bench_voice_changes`. Speech runs from silero-vad, segments "
        "of >= 1.6 s of speech (turns split at pauses of 0.5 s, long turns cut into ~3 s "
        "pieces), GE2E embeddings (our ONNX export, one-thread onnxruntime). A rule: group "
        "g compares the mean embedding of up to g segments before a boundary with up to g "
        "after; a change is a boundary below the threshold (and, for g > 1, the lowest of "
        "its neighbours). A join is found when a change is reported at the first segment after it (or after the segment that holds it); `false` "
        "counts clips with a change where there is none (on joins: a second change).",
        "",
        f"The pipeline's rule (`dispatcher.voice`): min {MIN_SEGMENT_S:.1f} s, group "
        f"{CHANGE_GROUP}, threshold {CHANGE_SIMILARITY:.2f}: the most sensitive rule here with "
        "a clear margin (0.08) below the lowest boundary cosine of one voice; 0.75 gives false "
        "changes on real one-voice recordings.",
        "",
    ]
    for name, res in results.items():
        lines += [
            f"## {name}",
            "",
            "| min speech s | group | threshold | joins found | joins with < 2 segments | one-voice clips "
            "with a false change | joins with a second change |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            lines.append(
                f"| {r['min_s']:.1f} | {r['group']} | {r['threshold']:.2f} | {r['found']}/{r['joins']} "
                f"| {r['unembeddable']} | {r['false_singles']}/{r['singles']} "
                f"| {r['false_joins']}/{r['joins']} |"
            )
        for (min_s, group), low in sorted(res["lowest"].items()):
            lines.append(
                f"Lowest boundary cosine on one-voice clips, min {min_s:.1f} s, group {group}: "
                + ("none (no clip has two segments)" if low is None else f"{low:.3f}")
                + "."
            )
        per = 1000 * res["voice_s"] / max(res["segments"], 1)
        lines += [
            "",
            f"{res['segments']} segments embedded; encoder CPU {res['voice_s']:.2f} s, "
            f"{per:.1f} ms per segment (mel front end not included).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--cache", type=Path, default=None, help="keep the embeddings here (pickle) and reuse them"
    )
    args = parser.parse_args(argv)
    if args.cache and args.cache.is_file():
        results = pickle.loads(args.cache.read_bytes())
    else:
        settings = Settings()
        media = Path(os.environ.get("DFD_MEDIA_DIR", "../shared/media"))
        results = {}
        for name, cases in (("GRID", grid_cases(media)), ("wild reals", wild_cases(media))):
            results[name] = evaluate(cases, voice_models(settings))
        if args.cache:
            args.cache.write_bytes(pickle.dumps(results))
    results = {name: score_rules(res) for name, res in results.items()}
    text = markdown(results)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
