"""One typed spec per served model: the single source of tensor names, shapes and dtypes.

The ONNX export, every ``config.pbtxt``, the ensemble wiring (``dfd.ensemble``) and the
dispatcher's requests are all derived from these objects; ``tests/export/test_registry.py``,
``tests/export/test_triton_repo.py`` and ``tests/export/test_ensemble.py`` check that
they agree. Imports nothing heavy: the dispatcher reads it.

Dims exclude the batch axis for models with ``max_batch_size > 0`` (Triton's rule); ``-1``
is a variable dimension. Dtypes use Triton's names (``TYPE_`` prefix dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dfd.errors import ConfigurationError
from dfd.states import Modality


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]

    @property
    def numpy_dtype(self) -> str:
        return {
            "FP32": "float32",
            "FP16": "float16",
            "INT64": "int64",
            "INT32": "int32",
            "UINT8": "uint8",
        }[self.dtype]


@dataclass(frozen=True)
class Batching:
    """Dynamic batching of one model (absent for models that do not batch)."""

    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int


@dataclass(frozen=True)
class ModelSpec:
    """A model as Triton serves it.

    Attributes:
        name: Triton model name (a role, so checkpoints can be swapped under it).
        checkpoint: which published checkpoint fills the role (``meso4_df``).
        version: Triton version directory; bump when the checkpoint or graph changes.
        weights: manifest file names this checkpoint needs.
        preprocessing: what the caller must do to raw media, in words.
        output_meaning: what the outputs mean, in words.
    """

    name: str
    checkpoint: str
    version: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    batching: Batching | None
    weights: tuple[str, ...]
    preprocessing: str
    output_meaning: str
    instance_count: int = 1
    modality: Modality | None = None
    extra: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """``checkpoint@version``, as reported in results."""
        return f"{self.checkpoint}@{self.version}"

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)


# --- constants the dispatcher and the models must agree on ---------------------------
FACE_SIZE = 256  # visual crop side, RGB in [0, 1]
HEATMAP_SIZE = 8  # Meso4's last conv block is 8x8 for a 256 input
SBI_HEATMAP_SIZE = 12  # SBI's EfficientNet-B4: the last block is 12x12 for its 380 input
SBI_SIZE = 380  # SBI's own crop side (its authors' face box plus margins, RGB uint8)
AUDIO_SAMPLES = 64_600  # AASIST and RawGAT-ST window, ~4.04 s at 16 kHz
AUDIO_RATE = 16_000
LIPSYNC_FRAMES = 25  # one second of video at 25 fps
LIPSYNC_FPS = 25
LIPSYNC_SIZE = 112  # grey face crop side, values 0..255
MFCC_PER_FRAME = 4  # MFCC at 100 Hz -> 4 per video frame
MFCC_COEFFS = 13
VAD_FRAME = 512  # silero-vad: one 32 ms frame at 16 kHz
VAD_CONTEXT = 64  # ... with the last 64 samples of the frame before it in front
VAD_STATE = 128  # LSTM state width (h and c are [1, 1, 128])
VOICE_FRAMES = 160  # Resemblyzer partial: 1.6 s of 10 ms mel frames
VOICE_MELS = 40
VOICE_EMBEDDING = 256
MESH_SIZE = 192  # MediaPipe face mesh input side, RGB in [0, 1]
MESH_POINTS = 468  # its landmarks, (x, y, z) each in input pixels
CLIP_SIZE = 224  # CLIP ViT-L/14 input side (UniversalFakeDetect's whole frames)
CLIP_EMBEDDING = 768  # its projected image embedding, the linear head's input
DETECTOR_SIZE = (
    640  # long side of the detector canvas; the short side is padded to a multiple of 32
)

_VISUAL_OUT = (
    TensorSpec("score", "FP32", (1,)),
    TensorSpec("heatmap", "FP32", (HEATMAP_SIZE, HEATMAP_SIZE)),
)
_VISUAL_PRE = "RGB face crop resized to 256x256, NCHW, scaled to [0, 1]"
_VISUAL_OUT_MEANING = (
    "score: P(manipulated) = 1 - P(real); heatmap: Grad-CAM of the manipulation logit "
    "over the last conv block (8x8, >= 0, not normalised)"
)


def _visual(checkpoint: str, weights: str) -> ModelSpec:
    return ModelSpec(
        name="visual",
        checkpoint=checkpoint,
        version=1,
        inputs=(TensorSpec("face", "FP32", (3, FACE_SIZE, FACE_SIZE)),),
        outputs=_VISUAL_OUT,
        max_batch_size=64,
        batching=Batching(preferred_batch_sizes=(16, 32, 64), max_queue_delay_us=1_000),
        weights=(f"mesonet/{weights}",),
        preprocessing=_VISUAL_PRE,
        output_meaning=_VISUAL_OUT_MEANING,
        modality=Modality.VISUAL,
    )


_AUDIO_PRE = (
    "mono float32 waveform at 16 kHz in [-1, 1], 64,600 samples (zero-padded by repetition)"
)
_AUDIO_OUT_MEANING = "logits: [spoof, bonafide]; score: softmax P(spoof)"


def _audio(
    checkpoint: str,
    weights: tuple[str, str],
    *,
    name: str = "audio",
    preprocessing: str = _AUDIO_PRE,
    output_meaning: str = _AUDIO_OUT_MEANING,
) -> ModelSpec:
    """An AASIST-family checkpoint (``.pth`` and its ``.conf``) served as Triton ``name``."""
    return ModelSpec(
        name=name,
        checkpoint=checkpoint,
        version=1,
        inputs=(TensorSpec("waveform", "FP32", (AUDIO_SAMPLES,)),),
        outputs=(TensorSpec("score", "FP32", (1,)), TensorSpec("logits", "FP32", (2,))),
        max_batch_size=32,
        batching=Batching(preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=1_000),
        weights=weights,
        preprocessing=preprocessing,
        output_meaning=output_meaning,
        modality=Modality.AUDIO,
    )


def _rawgat_st() -> ModelSpec:
    """RawGAT-ST (mul): a second audio detector, served beside AASIST under its own name."""
    return ModelSpec(
        name="rawgat",
        checkpoint="rawgat_st",
        version=1,
        # the authors' window, the same 64,600 samples as AASIST's; the graph's node counts
        # are fixed by it, so the window cannot change
        inputs=(TensorSpec("waveform", "FP32", (AUDIO_SAMPLES,)),),
        outputs=(TensorSpec("score", "FP32", (1,)), TensorSpec("logits", "FP32", (2,))),
        max_batch_size=32,
        batching=Batching(preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=1_000),
        weights=("rawgat_st/RawGAT_ST_mul.pth", "rawgat_st/model_config_RawGAT_ST.yaml"),
        preprocessing="mono float32 waveform at 16 kHz in [-1, 1] (not normalised), 64,600 "
        "samples (a shorter clip repeated from its start)",
        output_meaning="logits: [spoof, bonafide]; score: softmax P(spoof)",
        modality=Modality.AUDIO,
    )


def _ufd() -> ModelSpec:
    """UniversalFakeDetect: CLIP ViT-L/14's image embedding through the authors' linear probe."""
    return ModelSpec(
        name="ufd",
        checkpoint="ufd_clip_vitl14",
        version=1,
        inputs=(TensorSpec("frame", "FP32", (3, CLIP_SIZE, CLIP_SIZE)),),
        outputs=(TensorSpec("score", "FP32", (1,)), TensorSpec("logit", "FP32", (1,))),
        # ~80 GFLOP a frame: small batches, and the dispatcher sends at most 8 frames a video
        max_batch_size=16,
        batching=Batching(preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=1_000),
        weights=("clip/ViT-L-14.pt", "ufd_clip_linear/fc_weights.pth"),
        preprocessing="a whole RGB frame as openai/clip preprocesses it: the short side "
        "resized to 224 (PIL bicubic), centre-cropped to 224x224, NCHW, scaled to [0, 1] "
        "(dispatcher.frames.clip_frame); the CLIP mean/std is applied in the graph",
        output_meaning="logit: the linear head on the 768-d projected CLIP image embedding; "
        "score: sigmoid(logit) = P(fake), the authors' reading, uncalibrated",
        modality=Modality.VISUAL,
    )


SPECS: dict[str, ModelSpec] = {
    "yunet_n": ModelSpec(
        name="face_detector",
        checkpoint="yunet_n",
        version=1,
        inputs=(TensorSpec("image", "FP32", (3, -1, -1)),),
        outputs=(
            TensorSpec("boxes", "FP32", (-1, 4)),
            TensorSpec("landmarks", "FP32", (-1, 10)),
            TensorSpec("scores", "FP32", (-1,)),
        ),
        max_batch_size=16,
        batching=Batching(preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=1_000),
        weights=("yunet/yunet_n_dynamic.onnx",),
        preprocessing="BGR frame, NCHW, float 0..255, height and width multiples of 32 "
        "(the dispatcher scales the long side to 640 and pads the short one to a multiple of 32)",
        output_meaning="per prior: boxes x1,y1,x2,y2 and five landmarks (x,y) in input pixels, "
        "score = sqrt(cls*obj); NMS is the caller's",
    ),
    "meso4_df": _visual("meso4_df", "Meso4_DF.h5"),
    "meso4_f2f": _visual("meso4_f2f", "Meso4_F2F.h5"),
    "mesoinception_df": _visual("mesoinception_df", "MesoInception_DF.h5"),
    "mesoinception_f2f": _visual("mesoinception_f2f", "MesoInception_F2F.h5"),
    "aasist": _audio("aasist", ("aasist/AASIST.pth", "aasist/AASIST.conf")),
    "aasist_l": _audio("aasist_l", ("aasist/AASIST-L.pth", "aasist/AASIST-L.conf")),
    # The ASVspoof 5 challenge's baseline: the same graph trained on newer TTS and voice
    # conversion, at another operating point (ORIGIN.txt: bonafide ASVspoof 2019 speech
    # at logit[1] +10.5..+11.6, spoof +1.5..+4.3, so P(spoof) < 0.5 for both). Its own
    # role, so it is served beside the 2019 model and fused only after calibration.
    "aasist_asvspoof5": _audio(
        "aasist_asvspoof5",
        ("aasist_asvspoof5/AASIST_ASVspoof5.pth", "aasist_asvspoof5/AASIST_ASVspoof5.conf"),
        name="audio_asv5",
        preprocessing=_AUDIO_PRE + "; the same windows as the 2019 AASIST",
        output_meaning=_AUDIO_OUT_MEANING + ", uncalibrated: its operating point is not the "
        "2019 model's (spoofed speech often scores below 0.5), so it must be calibrated "
        "before use and never thresholded at 0.5",
    ),
    "rawgat_st": _rawgat_st(),
    "ufd_clip_vitl14": _ufd(),
    "light_asd": ModelSpec(
        name="lipsync",
        checkpoint="light_asd",
        version=1,
        inputs=(
            TensorSpec("video", "FP32", (LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE)),
            TensorSpec("mfcc", "FP32", (LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS)),
        ),
        outputs=(
            TensorSpec("score", "FP32", (1,)),
            TensorSpec("speaking", "FP32", (LIPSYNC_FRAMES,)),
        ),
        max_batch_size=32,
        batching=Batching(preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=1_000),
        weights=("light_asd/pretrain_AVA_CVPR.model",),
        preprocessing="25 grey 112x112 face crops at 25 fps (values 0..255) and the matching "
        "13-coefficient MFCC at 100 Hz (25 ms window, 10 ms step) of the 16 kHz audio",
        output_meaning="speaking: per-frame P(speaking in sync); score: P(manipulated) = "
        "1 - mean(speaking) (audio speech present but the face does not match it)",
        modality=Modality.LIPSYNC,
    ),
    "silero_vad": ModelSpec(
        name="vad",
        checkpoint="silero_vad",
        version=1,
        inputs=(
            TensorSpec("input", "FP32", (-1, VAD_CONTEXT + VAD_FRAME)),
            TensorSpec("h", "FP32", (1, 1, VAD_STATE)),
            TensorSpec("c", "FP32", (1, 1, VAD_STATE)),
        ),
        outputs=(
            TensorSpec("speech_probs", "FP32", (-1,)),
            TensorSpec("hn", "FP32", (1, 1, VAD_STATE)),
            TensorSpec("cn", "FP32", (1, 1, VAD_STATE)),
        ),
        max_batch_size=0,
        batching=None,
        # Not in the weights manifest: the silero-vad wheel (MIT) ships this ONNX file; the
        # export checks it against this SHA-256.
        weights=(),
        preprocessing="16 kHz mono audio cut into 32 ms frames of 512 samples, each with the "
        "64 samples before it in front (zeros before the first); the LSTM state h, c of the "
        "previous block (zeros at the start) so a long track is sent as consecutive blocks",
        output_meaning="speech_probs: P(speech) per frame; hn, cn: the state to send with the "
        "next block",
        extra={
            "package": "silero_vad",
            "file": "data/silero_vad_16k_sequence.onnx",
            "sha256": "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        },
    ),
    # SBI (Shiohara and Yamasaki, CVPR 2022): EfficientNet-B4, research-only weights the
    # user fetches (`dfd models pull sbi`); its own role beside the visual one.
    "sbi": ModelSpec(
        name="sbi",
        checkpoint="sbi",
        version=1,
        inputs=(TensorSpec("face", "UINT8", (3, SBI_SIZE, SBI_SIZE)),),
        outputs=(
            TensorSpec("score", "FP32", (1,)),
            TensorSpec("heatmap", "FP32", (SBI_HEATMAP_SIZE, SBI_HEATMAP_SIZE)),
        ),
        max_batch_size=16,
        batching=Batching(preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=1_000),
        weights=("sbi/sbi.tar",),
        preprocessing="its authors' crop (dispatcher.sbi_crop): the face box plus 1/8 of its "
        "width and height on each side, unrotated, clamped to the frame, resized (not square) "
        "bilinearly to 380x380 as cv2.resize does; RGB uint8 NCHW, divided by 255 inside the "
        "graph",
        output_meaning="score: softmax(logits)[:, 1], the authors' P(fake); heatmap: "
        "Grad-CAM of the fake log-odds over the last conv block (12x12, >= 0, not normalised)",
        modality=Modality.VISUAL,
    ),
    # Not a detector: speaker embeddings for the voice-consistency evidence (a change of
    # voice inside a video). Partials as the Resemblyzer wheel cuts them.
    "resemblyzer": ModelSpec(
        name="voice",
        checkpoint="resemblyzer",
        version=1,
        inputs=(TensorSpec("mels", "FP32", (VOICE_FRAMES, VOICE_MELS)),),
        outputs=(TensorSpec("embedding", "FP32", (VOICE_EMBEDDING,)),),
        max_batch_size=32,
        batching=Batching(preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=1_000),
        weights=("resemblyzer/pretrained.pt",),
        preprocessing="160 frames (1.6 s) of the 40-band mel power spectrogram (no log) of "
        "16 kHz speech raised to -30 dBFS: 25 ms Hann window, 10 ms hop, Slaney mel "
        "(dfd.voice_features.partial_mels), partials at 1.3 per second",
        output_meaning="embedding: the partial's unit-length GE2E speaker embedding; a "
        "segment's embedding is the normalised mean of its partials', and the cosine of two "
        "segments' embeddings says how alike the voices are",
    ),
    # Not a scorer in the ensemble: face landmarks for the mouth-sync detector
    # (dispatcher.mouth), which compares the mouth's opening with the voice's energy.
    "mediapipe_face_mesh": ModelSpec(
        name="face_mesh",
        checkpoint="mediapipe_face_mesh",
        version=1,
        inputs=(TensorSpec("image", "FP32", (3, MESH_SIZE, MESH_SIZE)),),
        outputs=(
            TensorSpec("landmarks", "FP32", (MESH_POINTS * 3,)),
            TensorSpec("face_prob", "FP32", (1,)),
        ),
        max_batch_size=32,
        batching=Batching(preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=1_000),
        weights=("mediapipe_face_mesh/face_landmark.tflite",),
        preprocessing="RGB face crop, NCHW, scaled to [0, 1], 192x192: the face box made "
        "square and enlarged 1.5x about its centre (MediaPipe's face-landmark ROI, unrotated)",
        output_meaning="landmarks: 468 x (x, y, z) in crop pixels (MediaPipe's mesh order; "
        "inner lips 13/14, eye corners 33/263); face_prob: P(a face fills the crop)",
    ),
}


def spec(checkpoint: str) -> ModelSpec:
    """The spec registered under ``checkpoint``; a clear error for unknown names."""
    try:
        return SPECS[checkpoint]
    except KeyError:
        known = ", ".join(sorted(SPECS))
        raise ConfigurationError(
            f"model registry: no checkpoint named {checkpoint!r}; known: {known}"
        ) from None
