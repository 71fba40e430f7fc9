"""Configuration of the local teacher server: outcomes, CoT placement, faults, drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .hostile import Hostile

CotPlacement = Literal["reasoning_content", "reasoning", "think", "think_unopened", "none"]
COT_PLACEMENTS: tuple[str, ...] = ("reasoning_content", "reasoning", "think", "think_unopened", "none")

OUTCOMES: tuple[str, ...] = (
    "right",
    "wrong",
    "truncated",
    "no_think",
    "mixed_lang",
    "duplicate",
    "degenerate",
    "no_boxed",
)
# The config's file paths: resolved against the config file's folder (`from_yaml`) and checked
# before the server starts (`check_paths`).
PATH_FIELDS: tuple[str, ...] = ("problems", "request_log")

FAULTS: tuple[str, ...] = ("429", "500", "503", "timeout", "reset", "malformed", "empty", "400", "401")


def _check_probs(value: dict[str, float], allowed: tuple[str, ...], what: str) -> dict[str, float]:
    for k, p in value.items():
        if k not in allowed:
            raise ValueError(f"unknown {what} {k!r}; expected one of {', '.join(allowed)}")
        if p < 0:
            raise ValueError(f"{what} {k!r}: probability must be >= 0, got {p}")
    return value


class FaultBurst(BaseModel):
    """Every request gets `fault` for `duration_s` seconds, from `start_s` after the server started
    (or its last /stats/reset) or from its `after_requests`-th chat request, whichever comes first."""

    model_config = ConfigDict(extra="forbid")

    fault: str = "429"
    start_s: float | None = Field(default=None, ge=0)
    after_requests: int | None = Field(default=None, ge=0)
    duration_s: float = Field(default=10.0, ge=0)
    # Retry-After of the burst's 429s (a provider-wide limit asks for longer waits than a blip).
    retry_after_s: float | None = Field(default=None, ge=0)

    @field_validator("fault")
    @classmethod
    def _fault(cls, v: str) -> str:
        if v not in FAULTS:
            raise ValueError(f"unknown fault {v!r}; expected one of {', '.join(FAULTS)}")
        return v


class BatchScript(BaseModel):
    """How the batch API (`/v1/files` + `/v1/batches`, curator/teacher/batch.py) plays a batch out.

    A batch is validating for `validating_s`, in_progress for `in_progress_s`, finalizing for
    `finalizing_s` (seconds after create), then ends as `end`. An expired (or cancelled) batch
    finished `finished_fraction` of its rows: their answers are in the output file, the rest are
    in the error file. Rows whose custom_id hashes under `error_fraction` fail their first
    `error_times` submissions (in any batch) with a server error."""

    model_config = ConfigDict(extra="forbid")

    validating_s: float = Field(default=0.0, ge=0)
    in_progress_s: float = Field(default=0.0, ge=0)
    finalizing_s: float = Field(default=0.0, ge=0)
    end: Literal["completed", "expired", "failed"] = "completed"
    finished_fraction: float = Field(default=0.5, ge=0, le=1)
    error_fraction: float = Field(default=0.0, ge=0, le=1)
    error_times: int = Field(default=1, ge=0)


class ServerConfig(BaseModel):
    """Everything the fake teacher does. Load with `ServerConfig.load(dict | path | None)`."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["deepseek-reasoner", "teacher"])
    api_key: str | None = None
    latency_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    cot_placement: CotPlacement = "reasoning_content"
    cot_words: int = Field(default=60, ge=1)
    # Outcome -> weight (normalised when sampled). See OUTCOMES.
    mix: dict[str, float] = Field(default_factory=lambda: {"right": 1.0})
    problems: str | None = None
    id_column: str = "id"
    problem_column: str = "problem"
    answer_column: str = "answer"
    # A column of the problems file holding each problem's chance of a wrong answer (0..1): those
    # problems draw right/wrong by it instead of `mix` (mixed difficulty for bench/k_accepted.py).
    wrong_rate_column: str | None = None
    seed: int = 0
    n_mode: Literal["support", "ignore", "reject"] = "support"
    cached_fraction: float = Field(default=0.0, ge=0, le=1)
    # Fault kind -> probability per request (deterministic by seed + request counter).
    fault_rate: dict[str, float] = Field(default_factory=dict)
    # Fault kind -> k: each distinct request body fails its first k attempts with that fault.
    fail_first: dict[str, int] = Field(default_factory=dict)
    retry_after_s: float = Field(default=0.05, ge=0)
    hang_s: float = Field(default=30.0, ge=0)
    collapse_after: int | None = Field(default=None, ge=0)
    tokens_per_word: float = Field(default=1.3, gt=0)
    # Requests answered at once; the rest wait in the server's queue, as llama.cpp's server does
    # (1: serial). None: no limit.
    max_concurrent: int | None = Field(default=None, ge=1)
    send_usage: bool = True  # False: no usage block, as llama.cpp when streaming and some proxies
    # Injected 400/500 error bodies quote the request's Authorization header, as careless proxies
    # do: tests check that curator never prints or stores such a reply unredacted.
    echo_auth: bool = False
    # A gateway's own credentials: requests without these headers (chat and /models) or top-level
    # body fields (chat) (exact values) get a 401, as gateways that take a key in a header or in
    # the body do.
    require_headers: dict[str, str] = Field(default_factory=dict)
    require_body: dict[str, Any] = Field(default_factory=dict)
    fault_burst: FaultBurst | None = None
    # JSONL file with one line per chat request (curator/teacher/reqlog.py); None: no log.
    request_log: str | None = None
    batch: BatchScript = Field(default_factory=BatchScript)
    # Well-formed but untrustworthy answers (negative usage, content_filter, redirects, a trickled
    # body...): curator/teacher/hostile.py.
    hostile: Hostile = Field(default_factory=Hostile)

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        _check_probs(v, OUTCOMES, "outcome")
        if not v or sum(v.values()) <= 0:
            raise ValueError("mix needs at least one outcome with a positive weight")
        return v

    @field_validator("fault_rate")
    @classmethod
    def _fault_rate(cls, v: dict[str, float]) -> dict[str, float]:
        _check_probs(v, FAULTS, "fault")
        if sum(v.values()) > 1 + 1e-9:
            raise ValueError(f"fault_rate probabilities sum to {sum(v.values())} > 1")
        return v

    @field_validator("fail_first")
    @classmethod
    def _fail_first(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if k not in FAULTS:
                raise ValueError(f"unknown fault {k!r}; expected one of {', '.join(FAULTS)}")
            if n < 0:
                raise ValueError(f"fail_first {k!r}: must be >= 0, got {n}")
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("models must name at least one model")
        return v

    @classmethod
    def from_yaml(cls, path: str | Path) -> ServerConfig:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        for field in PATH_FIELDS:  # relative to the config file, as manifest paths are
            if isinstance(data.get(field), str) and data[field]:
                data[field] = str((Path(path).parent / Path(data[field]).expanduser()).resolve())
        return cls.model_validate(data)

    @classmethod
    def load(cls, source: ServerConfig | dict[str, Any] | str | Path | None = None, **overrides: Any) -> ServerConfig:
        """A config from a ServerConfig, a dict, a YAML path or nothing (defaults), plus overrides."""
        if source is None:
            data: dict[str, Any] = {}
        elif isinstance(source, ServerConfig):
            data = source.model_dump()
        elif isinstance(source, dict):
            data = dict(source)
        else:
            data = cls.from_yaml(source).model_dump(exclude_unset=True)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


def parse_weights(text: str) -> dict[str, float]:
    """`right=0.8,wrong=0.2` or a JSON object (the command line's outcome and fault mixes)."""
    import json

    text = text.strip()
    if text.startswith("{"):
        return {str(k): float(v) for k, v in json.loads(text).items()}
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, _, v = part.partition("=")
        out[k.strip()] = float(v) if v else 1.0
    return out


def config_from_options(config: str | Path | None = None, config_json: str | None = None, **options: Any) -> ServerConfig:
    """`curator serve`'s options: a YAML file, then a JSON object, then single options (None: unset);
    `models` and the weight mixes come as the command line writes them."""

    from pydantic import ValidationError

    from curator.errors import ManifestError

    try:
        cfg = _config_from_options(config, config_json, options)
    except (ValidationError, ValueError, OSError, yaml.YAMLError) as e:
        where = f"{config}: " if config else ""
        raise ManifestError(f"{where}bad teacher server config: {' '.join(str(e).split())[:400]}") from None
    check_paths(cfg, config, config_json, options)
    return cfg


def check_paths(cfg: ServerConfig, config: str | Path | None = None, config_json: str | None = None,
                options: dict[str, Any] | None = None) -> None:
    """One line naming where a path came from (the config file, --config-json or the option), the
    field and the path, instead of a traceback once the server starts."""
    import json

    from curator.errors import ManifestError, os_error_text

    from_json = json.loads(config_json) if config_json else {}

    def where(field: str) -> str:
        if (options or {}).get(field) is not None:
            return f"--{field.replace('_', '-')}"
        if field in from_json:
            return f"--config-json {field}"
        return f"{config}: {field}" if config else field

    if cfg.problems:
        path = Path(cfg.problems)
        if not path.exists():
            raise ManifestError(f"{where('problems')}: file not found: {path}")
        if not path.is_file():
            raise ManifestError(f"{where('problems')}: not a file: {path}")
    if cfg.request_log:
        path = Path(cfg.request_log)
        if path.is_dir():
            raise ManifestError(f"{where('request_log')}: is a folder, not a file: {path}")
        try:  # the server appends to it: its folder must exist or be creatable
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ManifestError(f"{where('request_log')}: cannot create the folder of {path}: {os_error_text(e)}") from None


def _config_from_options(config, config_json, options: dict[str, Any]) -> ServerConfig:
    import json

    data: dict[str, Any] = {}
    if config:
        data.update(ServerConfig.from_yaml(config).model_dump(exclude_unset=True))
    if config_json:
        data.update(json.loads(config_json))
    for k, v in options.items():
        if v is None:
            continue
        if k == "models":
            v = [m.strip() for m in v.split(",") if m.strip()]
        elif k in ("mix", "fault_rate"):
            v = parse_weights(v)
        elif k == "fail_first":
            v = {kk: int(vv) for kk, vv in parse_weights(v).items()}
        data[k] = v
    return ServerConfig.model_validate(data)
