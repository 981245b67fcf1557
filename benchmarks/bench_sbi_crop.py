"""SBI's own crop: what cutting it costs per face, beside the visual detector's crop.

    python -m benchmarks.bench_sbi_crop [--media-dir DIR] [--runs 40]

On the astronaut still (``media_dir/still/astronaut.png``): a GRID-size face (a 90x110
px box in a 360x288 frame) and an HD one (300x380 px in the still scaled to 1280x720),
each cut ``--runs`` times as ``dispatcher.sbi_crop.sbi_crop`` cuts it (380x380 uint8)
and as ``dispatcher.faces`` cuts the visual crop (256x256, float32 in [0, 1]). Prints a
Markdown table of the median and the best time per face, with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dispatcher.faces import CropGeometry, visual_crop
from dispatcher.sbi_crop import sbi_crop


def _times_ms(fn, runs: int) -> list[float]:
    for _ in range(3):  # warm-up
        fn()
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--media-dir", type=Path, default=Path(os.environ.get("DFD_MEDIA_DIR", "media"))
    )
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args(argv)
    still = np.asarray(Image.open(args.media_dir / "still" / "astronaut.png").convert("RGB"))
    cases = {
        "GRID-size face (90x110 px box, 360x288 frame)": (
            np.ascontiguousarray(still[:288, :360]),
            (130.0, 80.0, 220.0, 190.0),
        ),
        "HD face (300x380 px box, 1280x720 frame)": (
            np.asarray(Image.fromarray(still).resize((1280, 720))),
            (500.0, 150.0, 800.0, 530.0),
        ),
    }
    print("| face | SBI 380 crop, median / best (ms) | visual 256 crop, median / best (ms) |")
    print("|---|---|---|")
    for name, (image, box) in cases.items():
        x0, y0, x1, y1 = box
        geometry = CropGeometry((x0 + x1) / 2, (y0 + y1) / 2, 1.2 * max(x1 - x0, y1 - y0), 0.1)
        own = _times_ms(lambda image=image, box=box: sbi_crop(image, box), args.runs)
        visual = _times_ms(
            lambda image=image, g=geometry: visual_crop(image, g).astype(np.float32) / 255.0,
            args.runs,
        )
        print(
            f"| {name} | {statistics.median(own):.1f} / {min(own):.1f} | "
            f"{statistics.median(visual):.1f} / {min(visual):.1f} |"
        )
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
