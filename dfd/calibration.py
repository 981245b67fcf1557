"""The fitted calibration: each detector's raw score to a probability, and the fused probability.

``dfd/calibration.json`` is written by ``dfd models calibrate`` (``export.calibrate``) and
committed; this module only reads and applies it, with no fitting and no I/O beyond the
one read. Per detector, a calibration is either

- ``platt``: ``p = sigmoid(a * logit(raw) + b)`` (the raw score is itself a probability-like
  number in [0, 1], so its log-odds is the feature), or
- ``isotonic``: a non-decreasing step function, linear between its knots ``x -> y``.

The fused probability is a logistic regression over each detector's evidence, its
calibrated log-odds less the log-odds of its ``prior`` (the share of manipulated items in
the data it was fitted on): ``sigmoid(bias + sum_d w_d * (logit(p_d) - logit(prior_d)))``,
summed over the detectors that looked. A detector that is missing (no face, no speech,
switched off) adds nothing, the same as one that scored exactly its prior; with nothing
looked at, the fused probability is ``sigmoid(bias)``. Detectors without a fusion weight
are evidence only and are ignored there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfd.errors import ConfigurationError

FORMAT = 1
DEFAULT_PATH = Path(__file__).with_name("calibration.json")
EPS = 1e-4
"""Probabilities are kept inside [EPS, 1 - EPS], so every log-odds is finite."""


def clip(p: float) -> float:
    return min(max(p, EPS), 1.0 - EPS)


def logit(p: float) -> float:
    p = clip(p)
    return math.log(p / (1.0 - p))


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class Platt:
    a: float
    b: float

    def __call__(self, raw: float) -> float:
        return clip(sigmoid(self.a * logit(raw) + self.b))


@dataclass(frozen=True)
class Isotonic:
    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, raw: float) -> float:
        xs, ys = self.x, self.y
        if raw <= xs[0]:
            return clip(ys[0])
        if raw >= xs[-1]:
            return clip(ys[-1])
        lo, hi = 0, len(xs) - 1
        while hi - lo > 1:  # the knots bracketing raw
            mid = (lo + hi) // 2
            if xs[mid] <= raw:
                lo = mid
            else:
                hi = mid
        span = xs[hi] - xs[lo]
        t = 0.0 if span == 0 else (raw - xs[lo]) / span
        return clip(ys[lo] + t * (ys[hi] - ys[lo]))


Calibrator = Platt | Isotonic


@dataclass(frozen=True)
class Calibration:
    """A loaded calibration file (see the module docstring)."""

    version: str
    calibrators: Mapping[str, Calibrator]
    priors: Mapping[str, float]
    weights: Mapping[str, float]
    bias: float
    document: Mapping[str, Any]  # the whole file, for reports (data, command, CV figures)

    @property
    def detectors(self) -> tuple[str, ...]:
        return tuple(self.calibrators)

    def calibrated(self, detector: str, raw: float) -> float:
        """``raw`` (in [0, 1]) of ``detector`` as a calibrated probability of manipulation."""
        if detector not in self.calibrators:
            raise ConfigurationError(
                f"calibration {self.version}: no calibration for detector {detector!r} "
                f"(calibrated: {', '.join(self.calibrators) or 'none'})"
            )
        if not 0.0 <= raw <= 1.0 or math.isnan(raw):
            raise ValueError(f"calibration: raw score of {detector} must be in [0, 1], got {raw}")
        return self.calibrators[detector](raw)

    def evidence(self, detector: str, calibrated: float) -> float:
        """The log-odds ``calibrated`` adds over the detector's prior (0: no evidence)."""
        return logit(calibrated) - logit(self.priors.get(detector, 0.5))

    def fused(
        self,
        calibrated_scores: Mapping[str, float | None],
        weights: Mapping[str, float] | None = None,
    ) -> float:
        """The fused probability over the detectors that looked (``None`` = missing), with
        the fitted weights or ``weights`` in their place."""
        w = self.weights if weights is None else weights
        z = self.bias
        for name, p in calibrated_scores.items():
            if p is None or not w.get(name):
                continue
            z += w[name] * self.evidence(name, p)
        return sigmoid(z)

    def fused_raw(self, raw_scores: Mapping[str, float | None]) -> float:
        """``fused`` of the calibrated raw scores (detectors without a calibration skipped)."""
        return self.fused(
            {
                n: (None if r is None else self.calibrated(n, r))
                for n, r in raw_scores.items()
                if n in self.calibrators
            }
        )


def _calibrator(name: str, spec: Mapping[str, Any]) -> Calibrator:
    method = spec.get("method")
    if method == "platt":
        return Platt(a=float(spec["a"]), b=float(spec["b"]))
    if method == "isotonic":
        x = tuple(float(v) for v in spec["x"])
        y = tuple(float(v) for v in spec["y"])
        if not x or len(x) != len(y) or list(x) != sorted(x) or list(y) != sorted(y):
            raise ValueError(f"isotonic {name}: expected equal, non-empty, sorted x and y")
        return Isotonic(x=x, y=y)
    raise ValueError(f"detector {name}: expected method platt or isotonic, got {method!r}")


def parse(doc: Mapping[str, Any], where: str = "calibration") -> Calibration:
    """A calibration from its JSON document; a malformed one is a ``ConfigurationError``."""
    try:
        if doc.get("format") != FORMAT:
            raise ValueError(f"expected format {FORMAT}, got {doc.get('format')!r}")
        calibrators = {n: _calibrator(n, s) for n, s in doc["detectors"].items()}
        priors = {n: clip(float(s.get("prior", 0.5))) for n, s in doc["detectors"].items()}
        fusion = doc["fusion"]
        weights = {n: float(w) for n, w in fusion["weights"].items()}
        unknown = set(weights) - set(calibrators)
        if unknown:
            raise ValueError(f"fusion weights for uncalibrated detectors {sorted(unknown)}")
        return Calibration(
            version=str(doc["version"]),
            calibrators=calibrators,
            priors=priors,
            weights=weights,
            bias=float(fusion["bias"]),
            document=doc,
        )
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigurationError(f"{where}: not a valid calibration file ({detail})") from exc


def load(path: Path | None = None) -> Calibration:
    """Read ``path`` (default: the committed ``dfd/calibration.json``)."""
    path = path or DEFAULT_PATH
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"calibration: {path} not found (fit one with `dfd models calibrate`)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"calibration: {path} is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ConfigurationError(f"calibration: {path}: expected a JSON object")
    return parse(doc, str(path))
