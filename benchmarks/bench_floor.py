"""The floor of a video's cost, beside what the real pipeline and service take.

    .venv/bin/python -m benchmarks.bench_floor [--runs 3] [--videos 6] [--clip PATH]
        [--inputs h264,vp9,audio] [--tag cpu]

For three inputs (the 30 s 1080p H.264 benchmark clip of ``bench_stages.build_clip``, a
60 s 720p VP9 + Opus clip and a 30 s AAC audio file, both cut from the same GRID clip)
it measures, in this process and on one thread, what the work itself needs:

* decode: a pass that decodes only what the pipeline uses: every reference frame (the
  others are predicted from them), the non-reference frames nearest the sampling times and
  the lip-sync clips' consecutive frames (``skip_frame`` per packet, chosen from the
  timestamps a demux-only pass reads), the conversions of those frames, and the audio;
* each model's compute on the video's own items (the real decode, faces and speech
  stages feed a client that runs the ``cpu`` repository's ONNX files in one-thread
  onnxruntime sessions): the speech gate, face detection and each detector of the
  ensemble;
* the CPU work between them (face crops and MFCC, evidence encoding), as the pipeline's
  own functions do it.

The floor is the sum in core-seconds: with two cores a video can finish no sooner than
half of it, and two cores finish no more than ``2 * 60 / floor`` videos a minute. Then the
real pipeline (``dispatcher.pipeline.analyze`` against a local Triton on the ``cpu``
repository, median of ``--runs``) and the real service (``dfd serve``'s stack with two
workers, ``--videos`` uploads at once; 0 skips it) are timed and given as ratios to it.
CPU times are the process's own (``time.process_time``), with Triton's process tree read
from ``/proc``; the minimum over repeats is kept. Writes ``benchmarks/results/floor_cpu``
``.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.bench_stages import GRID_CLIP, add_clip_arguments, build_clip, machine
from benchmarks.machine import load_average, write_results
from benchmarks.ort_models import OrtModels

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PIPELINE_STAGES = ("probe", "provenance", "decode", "hashes", "speech", "faces", "inference")
PIPELINE_STAGES += ("evidence",)


def build_vp9_clip(media_dir: Path, out: Path, seconds: int = 60) -> Path:
    """The GRID clip looped to ``seconds``, 1280x720 VP9 + Opus in WebM."""
    src = media_dir / "grid" / GRID_CLIP
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-stream_loop", str(-(-seconds // 3)), "-i", str(src),
            "-vf", "scale=-2:720:flags=bicubic,pad=1280:720:(ow-iw)/2:0",
            "-t", str(seconds), "-r", "25",
            "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1",
            "-b:v", "1500k", "-g", "120", "-c:a", "libopus", "-b:a", "64k", str(out),
        ],
        check=True,
        timeout=600,
    )  # fmt: skip
    return out


def build_audio_file(media_dir: Path, out: Path, seconds: int = 30) -> Path:
    """The GRID clip's sound looped to ``seconds``, AAC in an M4A file (no video)."""
    src = media_dir / "grid" / GRID_CLIP
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-stream_loop", str(-(-seconds // 3)), "-i", str(src), "-vn",
            "-t", str(seconds), "-c:a", "aac", "-b:a", "128k", str(out),
        ],
        check=True,
        timeout=300,
    )  # fmt: skip
    return out


def cpu_of_tree(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every live descendant, from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo.extend(c for c, parent in parents.items() if parent == p)
    return total


def needed_decode(path: Path, settings: Any) -> dict[str, Any]:
    """Decode only what the pipeline uses, on one thread; CPU seconds and frame counts.

    A demux-only pass reads every video packet's timestamp, so the frames nearest the
    sampling times and the clips' target times are known before decoding
    (``dispatcher.decode_pyav.frame_plan``, the same nearest-frame rule the pipeline
    applies); every other packet is decoded with ``skip_frame=NONREF`` (a reference frame
    is decoded anyway: later ones are predicted from it). The picked frames are converted
    as the pipeline converts them (RGB for samples, grey for clips, at its output size);
    the audio is decoded and resampled to 16 kHz mono.
    """
    import av
    from av.video.reformatter import VideoReformatter

    from dfd.specs import AUDIO_RATE
    from dispatcher.decode_pyav import frame_plan
    from dispatcher.media import output_size, pixel_budget
    from dispatcher.sampling import clip_starts

    started = time.process_time()
    with av.open(str(path)) as container:
        has_video = bool(container.streams.video)
    plan = frame_plan(path, settings) if has_video else None
    plan_s = time.process_time() - started
    rgb = grey = decoded = 0
    with av.open(str(path)) as container:
        vstream = container.streams.video[0] if has_video else None
        astream = container.streams.audio[0] if container.streams.audio else None
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        size = (0, 0)
        if vstream is not None:
            vstream.thread_type = "NONE"
            cc = vstream.codec_context
            duration = container.duration / 1_000_000 if container.duration else None
            clips = clip_starts(duration, settings.sample_fps, settings.lipsync_max_clips)
            size = output_size(
                cc.width,
                cc.height,
                settings.decode_max_side_px,
                pixel_budget(settings, duration, len(clips) if astream else 0),
            )
        to_rgb, to_grey = VideoReformatter(), VideoReformatter()
        streams = [s for s in (vstream, astream) if s is not None]
        for packet in container.demux(*streams):
            if vstream is not None and plan is not None and packet.stream is vstream:
                vstream.codec_context.skip_frame = (
                    "DEFAULT" if packet.pts in plan.wanted else "NONREF"
                )
            for frame in packet.decode():
                if isinstance(frame, av.AudioFrame):
                    for out in resampler.resample(frame):
                        out.to_ndarray()
                    continue
                decoded += 1
                use = plan.wanted.get(frame.pts) if plan is not None else None
                if use is None:
                    continue
                if use.samples:
                    to_rgb.reformat(frame, *size, "rgb24", interpolation="AREA").to_ndarray()
                    rgb += 1
                if use.clips:
                    to_grey.reformat(frame, *size, "gray", interpolation="AREA").to_ndarray()
                    grey += 1
        if astream is not None:
            resampler.resample(None)
    return {
        "cpu_s": time.process_time() - started,
        "plan_cpu_s": plan_s,
        "frames_decoded": decoded,
        "frames_in_stream": len(plan.pts) if plan is not None else 0,
        "rgb_conversions": rgb,
        "grey_conversions": grey,
    }


def decoder_cpu(path: Path, settings: Any, planned: bool) -> dict[str, Any]:
    """CPU of the pipeline's own decoder on ``path``: the planned pass (this tree) or the
    former one (every frame near a target decoded, picks made while decoding)."""
    from dispatcher.decode import decode
    from dispatcher.decode_pyav import _decode_pass

    wall, started = time.perf_counter(), time.process_time()
    if planned:
        media = decode(path, settings)
    else:
        media = _decode_pass(path, settings, None, None, True, None)
    return {
        "cpu_s": time.process_time() - started,
        "wall_s": time.perf_counter() - wall,
        "frames_decoded": media.frames_decoded,
    }


def best(fn: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    """The repeat with the least ``cpu_s`` (other load on the machine only adds to it)."""
    return min((fn() for _ in range(repeats)), key=lambda r: r["cpu_s"])


def floor_once(path: Path, settings: Any, client: OrtModels, workdir: Path) -> dict[str, Any]:
    """One measurement of every stage's floor on ``path`` (decode apart)."""
    from cli.analyze import FolderStore
    from dfd.calibration import load as load_calibration
    from dispatcher.aggregate import timeline
    from dispatcher.decode import decode
    from dispatcher.evidence import build_evidence
    from dispatcher.faces import NO_FACES, find_faces
    from dispatcher.infer import build_inputs, run_ensemble
    from dispatcher.pipeline import timeline_times
    from dispatcher.probe import probe
    from dispatcher.speech import find_speech

    info = probe(path, settings)
    media = decode(path, settings, info.duration_s, audio_only=not info.has_video)
    client.cpu_s = {}
    speech = find_speech(media.audio, client)
    started = time.process_time()
    faces = find_faces(media, client, settings, speech=speech.found) if media.frames else NO_FACES
    faces_cpu = time.process_time() - started
    crops_s = faces_cpu - client.cpu_s.get("face_detector", 0.0)
    inputs = build_inputs(media, faces, speech, settings)
    out = run_ensemble(inputs, client, settings)
    points = timeline(
        timeline_times(media, settings.sample_fps),
        out.items,
        load_calibration(),
        settings.fusion_scales(),
        1.0 / settings.sample_fps,
    )
    visual = out.items["visual"]
    started = time.process_time()
    build_evidence(
        "floor",
        media,
        faces,
        out.heatmaps,
        visual.scores if visual is not None else None,
        points,
        FolderStore(workdir),
        settings,
        audio_windows=out.items["audio"],
    )
    evidence_s = time.process_time() - started
    stages = {
        "speech gate (silero-vad)": client.cpu_s.get("vad", 0.0),
        "face detection (YuNet)": client.cpu_s.get("face_detector", 0.0),
        "face crops, clips, MFCC": crops_s,
        f"visual ({settings.visual_model})": client.cpu_s.get("visual", 0.0),
        f"audio ({settings.audio_model})": client.cpu_s.get("audio", 0.0),
        f"lip-sync ({settings.lipsync_model})": client.cpu_s.get("lipsync", 0.0),
        "evidence encoding": evidence_s,
    }
    return {
        "cpu_s": sum(stages.values()),
        "stages_cpu_s": stages,
        "items": {
            "frames_sampled": len(media.frames),
            "faces": len(inputs.faces),
            "audio_windows": len(inputs.audio),
            "lipsync_clips": len(inputs.lipsync_video),
        },
    }


def pipeline_runs(
    path: Path, settings: Any, grpc_url: str, triton_pid: int, runs: int, workdir: Path
) -> dict[str, Any]:
    """``analyze`` on ``path`` ``runs`` times after a warm-up: wall and CPU (with Triton's)."""
    from cli.analyze import FolderStore
    from dispatcher.pipeline import analyze
    from dispatcher.triton_client import TritonClient

    out = []
    with TritonClient(grpc_url, timeout_s=120) as client:
        for i in range(runs + 1):
            wall0, cpu0, tri0 = time.perf_counter(), time.process_time(), cpu_of_tree(triton_pid)
            result = analyze(path, settings, client, FolderStore(workdir), job_id=f"floor-{i}")
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0 + cpu_of_tree(triton_pid) - tri0
            if i:  # the first run warms Triton's sessions and this process's imports
                out.append({"wall_s": wall, "cpu_s": cpu, "timings_ms": result.timings_ms})
    return {
        "runs": out,
        "wall_s": statistics.median(r["wall_s"] for r in out),
        "cpu_s": statistics.median(r["cpu_s"] for r in out),
        "stages_ms": {
            k: statistics.median(r["timings_ms"].get(k, 0.0) for r in out) for k in PIPELINE_STAGES
        },
        "label": result.label,
    }


def service_throughput(path: Path, videos: int, workers: int, log_dir: Path) -> dict[str, Any]:
    """``videos`` uploads of ``path`` at once through the stack with ``workers`` workers."""
    import httpx

    from benchmarks.bench_e2e import BENCH_ENV, one_video
    from cli.demo import JobClient
    from cli.stack import Stack
    from dfd.settings import Settings

    os.environ.update(BENCH_ENV)
    with (
        (log_dir / "stack.log").open("wb") as log,
        Stack(Settings(), port=0, workers=workers, child_output=log, log=lambda s: None) as stack,
    ):
        assert stack.endpoints is not None
        with httpx.Client(base_url=stack.endpoints.gateway, timeout=120) as http:
            client = JobClient(http)
            with ThreadPoolExecutor(max_workers=workers) as pool:  # warm every worker
                list(pool.map(lambda _: one_video(client, path, 600), range(workers)))
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=videos) as pool:
                done = list(pool.map(lambda _: one_video(client, path, 900), range(videos)))
            elapsed = time.perf_counter() - started
    return {
        "workers": workers,
        "videos": len(done),
        "elapsed_s": elapsed,
        "videos_per_min": 60 * len(done) / elapsed,
    }


def clip_report(
    name: str, path: Path, settings: Any, client: OrtModels, server: Any, args: Any, tmp: Path
) -> dict[str, Any]:
    """Floor and real pipeline of one input."""
    from dispatcher.probe import probe

    info = probe(path, settings)
    decode = best(lambda: needed_decode(path, settings), args.repeats)
    decoders: dict[str, Any] = {}
    if info.has_video:
        for _ in range(args.repeats):  # interleaved, so drifting load hits both alike
            for key, planned in (("planned", True), ("former", False)):
                got = decoder_cpu(path, settings, planned)
                if key not in decoders or got["cpu_s"] < decoders[key]["cpu_s"]:
                    decoders[key] = got
    floor = best(lambda: floor_once(path, settings, client, tmp / "evidence"), args.repeats)
    stages = {"decode (needed frames, audio)": decode["cpu_s"], **floor["stages_cpu_s"]}
    floor_s = sum(stages.values())
    real = pipeline_runs(path, settings, server.grpc_url, server.pid, args.runs, tmp / "evidence")
    return {
        "name": name,
        "media": {
            "duration_s": round(info.duration_s, 2),
            "width": info.width,
            "height": info.height,
            "video_codec": info.video_codec,
            "audio_codec": info.audio_codec,
            "bytes": path.stat().st_size,
        },
        "items": floor["items"],
        "decode": decode,
        "decoders": decoders,
        "floor_cpu_s": stages,
        "floor_core_s": floor_s,
        "floor_latency_2core_s": floor_s / 2,
        "floor_videos_per_min_2core": 2 * 60 / floor_s,
        "pipeline": real,
        "latency_ratio_2core": real["wall_s"] / (floor_s / 2),
        "cpu_ratio": real["cpu_s"] / floor_s,
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# The floor of a video's cost (CPU), beside the pipeline and the service",
        "",
        f"Run {report['when']} with `{report['command']}`. Machine: {m['cpu']}, {m['cores']} "
        f"cores, Python {m['python']}, onnxruntime {m['onnxruntime']}, PyAV {m['pyav']}. Load "
        f"average (1, 5, 15 min) at start {report['loadavg']['start']}, at end "
        f"{report['loadavg']['end']}: **a loaded machine** (several agents share its two "
        "cores), so every figure is higher than on an idle one, the ratios less so (floor and "
        "pipeline ran side by side).",
        "",
        "Floor: each stage's CPU time on one thread, in this process, minimum of "
        f"{report['repeats']} repeats; decode produces only the reference frames and the "
        "picked ones, models run in one-thread onnxruntime on the `cpu` repository's ONNX "
        "files. Pipeline: `dispatcher.pipeline.analyze` against a local Triton (`cpu` "
        f"repository), median of {report['runs']} runs after a warm-up; its CPU counts this "
        "process and Triton's process tree.",
        "",
        "## Floor per stage, core-seconds",
        "",
        "| stage | " + " | ".join(c["name"] for c in report["clips"]) + " |",
        "|---|" + "---:|" * len(report["clips"]),
    ]
    names = list(dict.fromkeys(k for c in report["clips"] for k in c["floor_cpu_s"]))
    for key in names:
        lines.append(
            f"| {key} | "
            + " | ".join(f"{c['floor_cpu_s'].get(key, 0.0):.3f}" for c in report["clips"])
            + " |"
        )
    clips = report["clips"]

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> str:
        return f"| {label} | " + " | ".join(cell(c) for c in clips) + " |"

    lines += [
        row("**floor**", lambda c: f"**{c['floor_core_s']:.2f}**"),
        "",
        "## Against the floor",
        "",
        "| | " + " | ".join(c["name"] for c in clips) + " |",
        "|---|" + "---:|" * len(clips),
        row(
            "frames decoded / in the stream",
            lambda c: f"{c['decode']['frames_decoded']} / {c['decode']['frames_in_stream']}",
        ),
        row(
            "items (samples, faces, audio windows, clips)",
            lambda c: "{frames_sampled}, {faces}, {audio_windows}, {lipsync_clips}".format(
                **c["items"]
            ),
        ),
        row(
            "pipeline decoder CPU, core-s: planned pass / former margins",
            lambda c: (
                f"{c['decoders']['planned']['cpu_s']:.2f} / {c['decoders']['former']['cpu_s']:.2f}"
                if c["decoders"]
                else "n/a"
            ),
        ),
        row(
            "frames it decodes: planned / former",
            lambda c: (
                f"{c['decoders']['planned']['frames_decoded']} / "
                f"{c['decoders']['former']['frames_decoded']}"
                if c["decoders"]
                else "n/a"
            ),
        ),
        row("floor latency on 2 cores, s", lambda c: f"{c['floor_latency_2core_s']:.2f}"),
        row("pipeline latency, s", lambda c: f"{c['pipeline']['wall_s']:.2f}"),
        row("**latency / 2-core floor**", lambda c: f"**{c['latency_ratio_2core']:.2f}x**"),
        row("pipeline CPU, core-s", lambda c: f"{c['pipeline']['cpu_s']:.2f}"),
        row("pipeline CPU / floor", lambda c: f"{c['cpu_ratio']:.2f}x"),
        row(
            "floor-limited rate on 2 cores, videos/min",
            lambda c: f"{c['floor_videos_per_min_2core']:.1f}",
        ),
        "",
        "Pipeline stages (median ms): "
        + "; ".join(
            f"{c['name']}: "
            + ", ".join(f"{k} {v:.0f}" for k, v in c["pipeline"]["stages_ms"].items() if v)
            for c in report["clips"]
        )
        + ".",
        "",
    ]
    svc = report.get("service")
    if svc:
        first = report["clips"][0]
        lines += [
            "## The service",
            "",
            f"{svc['videos']} uploads of the {first['name']} clip at once through `dfd serve`'s "
            f"stack with {svc['workers']} workers: {svc['elapsed_s']:.1f} s, "
            f"**{svc['videos_per_min']:.1f} videos/min, "
            f"{svc['videos_per_min'] / first['floor_videos_per_min_2core']:.0%} of the "
            f"floor-limited {first['floor_videos_per_min_2core']:.1f}**.",
            "",
        ]
    else:
        lines += ["The service's throughput was not measured in this run (`--videos 0`).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="pipeline runs after a warm-up")
    parser.add_argument("--repeats", type=int, default=2, help="floor repeats (least kept)")
    parser.add_argument("--videos", type=int, default=6, help="service uploads; 0 skips")
    parser.add_argument("--workers", type=int, default=2)
    add_clip_arguments(parser)
    parser.add_argument("--tag", default="cpu", help="results file suffix")
    parser.add_argument(
        "--inputs",
        default="h264,vp9,audio",
        help="which inputs to measure, comma-separated (h264 is the service's clip)",
    )
    args = parser.parse_args(argv)
    chosen = set(args.inputs.split(","))
    if not chosen <= {"h264", "vp9", "audio"} or (args.videos and "h264" not in chosen):
        parser.error("--inputs: a subset of h264,vp9,audio; h264 when --videos is not 0")

    from cli.local_triton import LocalTriton
    from dfd.ensemble import for_settings
    from dfd.settings import Settings
    from export.triton_repo import build_repository

    load_start = load_average()
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="dfd-bench-floor-") as name:
        tmp = Path(name)
        builders = {
            "h264": (
                "30 s 1080p H.264",
                lambda: args.clip or build_clip(args.media_dir, tmp / "h264_1080p.mp4"),
            ),
            "vp9": ("60 s 720p VP9", lambda: build_vp9_clip(args.media_dir, tmp / "vp9_720p.webm")),
            "audio": (
                "30 s audio (AAC)",
                lambda: build_audio_file(args.media_dir, tmp / "audio.m4a"),
            ),
        }
        clips = {name: build() for key, (name, build) in builders.items() if key in chosen}
        repository = build_repository(settings, "cpu")
        client = OrtModels.of_repository(repository, for_settings(settings))
        with LocalTriton(settings, repository) as server:
            reports = [
                clip_report(n, p, settings, client, server, args, tmp) for n, p in clips.items()
            ]
        service = (
            service_throughput(clips["30 s 1080p H.264"], args.videos, args.workers, tmp)
            if args.videos
            else None
        )
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(
            ["python -m benchmarks.bench_floor", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "loadavg": {"start": load_start, "end": load_average()},
        "runs": args.runs,
        "repeats": args.repeats,
        "settings": {
            k: getattr(settings, k)
            for k in (
                "sample_fps",
                "decode_max_side_px",
                "lipsync_max_clips",
                "audio_hop_s",
                "overlap_stages",
            )
        },
        "clips": reports,
        "service": service,
    }
    write_results(RESULTS, f"floor_{args.tag}", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
