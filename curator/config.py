"""The run manifest: pydantic models, loading, validation with errors that name file and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curator.pkgpath import is_pkg, resolve_path, resolve_pkg
from curator.redact import is_env_ref, literal_keys, looks_like_key, resolve_env


from curator.errors import ManifestError  # noqa: E402,F401  (re-exported: raised by the loaders below)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Loader = Literal["gsm8k", "aime", "gpqa", "humaneval"]  # the layouts of curator/sample/loaders.py


class Source(_Strict):
    path: str  # a file, a folder of data files, or pkg:PACKAGE/path inside an installed package
    split: str | None = None  # for saved Hugging Face datasets (DatasetDict)
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "hf"] = "auto"
    # A benchmark's published row layout: the loader sets id, problem, answer (gold) and the
    # fields its filter reads (choices, tests...), so those three fields are not set with it.
    loader: Loader | None = None
    id: str | None = None  # column holding a unique id; row number when absent
    problem: str = "problem"
    answer: str | None = None  # gold answer column (optional)
    limit: int | None = Field(default=None, gt=0)
    shuffle_seed: int | None = None

    @field_validator("path")
    @classmethod
    def _package_installed(cls, v: str) -> str:
        if is_pkg(v):
            resolve_pkg(v)  # a missing package fails at load with the pip command, not mid-run
        return v

    @model_validator(mode="after")
    def _loader_owns_columns(self) -> Source:
        if self.loader:
            clash = sorted({"id", "problem", "answer"} & self.model_fields_set)
            if clash:
                raise ValueError(f"source.{clash[0]} cannot be set with loader {self.loader!r}, which sets id, problem and answer itself")
        return self


class PromptTemplate(_Strict):
    system: str | None = None
    user: str


class Price(_Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    output: float = Field(ge=0)
    batch_discount: float = Field(default=0.0, ge=0, lt=1)


class Params(BaseModel):
    # Sampling params pass through to the API, so unknown keys are allowed (presence_penalty...).
    model_config = ConfigDict(extra="allow")
    temperature: float | None = 0.6
    top_p: float | None = 0.95
    max_tokens: int | None = Field(default=None, gt=0)
    n: int = Field(default=1, ge=1, le=128)
    seed: int | None = None
    extra_body: dict[str, Any] | None = None


class EnvRef(_Strict):
    """`{env: NAME}`: the value is read from the environment when a request is made and never
    written anywhere (shards, receipts, the resolved manifest, exports hold the name only)."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


# Headers whose value is a credential whatever it looks like: only ever from the environment.
_CREDENTIAL_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|password")


class BatchOptions(_Strict):
    """`teacher.batch`: the provider's batch API limits and how often to look (curator/sample/batch.py)."""

    completion_window: str = "24h"
    max_requests: int = Field(default=50_000, gt=0)  # lines per batch file
    max_bytes: int = Field(default=200_000_000, gt=0)  # bytes per batch file
    poll_s: float = Field(default=30.0, gt=0)


class Teacher(_Strict):
    base_url: str
    model: str
    api_key_env: str | None = None
    params: Params = Field(default_factory=Params)
    price: Price | None = None
    n_strategy: Literal["auto", "param", "separate"] = "auto"
    # aiohttp (default): plain JSON over one aiohttp session, raising the openai package's
    # exceptions; openai: the AsyncOpenAI client, ~3x the client CPU per request, which at
    # thousands in flight makes the client, not the teacher, the bottleneck (bench/sampling.py).
    http: Literal["openai", "aiohttp"] = "aiohttp"
    # For teachers that send no usage: a local tokenizer.json or .gguf to count tokens with
    # (curator/sample/tokencount.py); without one, a character estimate. Such counts are flagged.
    tokenizer: str | None = None
    # online: one HTTP request per prompt. batch: the provider's /v1/files + /v1/batches, priced
    # with the model's batch_discount, answers within completion_window (curator/sample/batch.py).
    mode: Literal["online", "batch"] = "online"
    batch: BatchOptions = Field(default_factory=BatchOptions)
    # Several servers of the same model (a vLLM/SGLang fleet): requests go to these, spread by
    # load (curator/sample/fleet.py); base_url stays the deployment's identity that keys hash.
    replicas: list[str] | None = Field(default=None, min_length=1)
    # Extra HTTP headers of every request (a gateway's key...): a credential comes from
    # the environment, `X-Api-Key: {env: GATEWAY_KEY}`; a literal one is refused.
    headers: dict[str, str | EnvRef] | None = None

    def request_headers(self) -> dict[str, str]:
        """`headers` with `{env: NAME}` values read from the environment, for requests only (a
        missing variable: MissingEnv, one line naming it)."""
        return resolve_env(self.model_dump(include={"headers"})["headers"] or {}, "teacher.headers")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        problem = url_secret_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, v: list[str] | None) -> list[str] | None:
        problem = replica_problem(v) if v else None
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="before")
    @classmethod
    def _no_literal_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError("teacher.api_key is not allowed: put the key in an environment variable and name it in teacher.api_key_env")
        return data


def replica_problem(urls: list[str]) -> str | None:
    """Why a `teacher.replicas` list is unusable (not a URL, two equal), or None."""
    seen: dict[str, int] = {}
    for i, url in enumerate(urls, 1):
        problem = url_secret_problem(url) if isinstance(url, str) else None
        if problem:
            return f"replica {i} {problem}"  # the URL itself is never repeated: it holds the secret
        try:
            parts = urlsplit(url.strip()) if isinstance(url, str) else None
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            return f"replica {i} {url!r} is not a URL (http[s]://HOST[:PORT]/PATH)"
        same = _same_url(url)
        if same in seen:
            return f"replicas {seen[same]} and {i} are the same URL ({url}): list each replica once"
        seen[same] = i
    return None


def url_secret_problem(url: str) -> str | None:
    """Why a teacher URL may not be used as written: it carries credentials, which would reach
    error lines, receipts and manifest.resolved.yaml. None when it is clean."""
    try:
        parts = urlsplit(url.strip())
        userinfo = parts.username is not None or parts.password is not None
    except ValueError:
        return None  # not a URL at all: the other checks say so
    if userinfo or "@" in parts.netloc:
        return ("holds credentials (user:password@ in the URL): remove them and put the key in an environment variable "
                "named by teacher.api_key_env, or send it as a header (teacher.headers: {NAME: {env: VARIABLE}})")
    if parts.query and looks_like_key(parts.query):
        return "holds what looks like a key in its query string: remove it and put the key in an environment variable (teacher.api_key_env)"
    return None


def secret_problem(teacher: Teacher) -> str | None:
    """A literal credential in the teacher's headers or params (one line naming the field), or
    `{env: NAME}` in extra_body with batch mode (batch files are written to disk); None if clean."""
    for name, value in (teacher.headers or {}).items():
        if isinstance(value, str) and (_CREDENTIAL_HEADER.search(name) or looks_like_key(value)):
            return (f"teacher.headers.{name} holds a literal credential: put it in an environment variable and write "
                    f"`{name}: {{env: VARIABLE}}` (it is read at request time and never written)")
    params = teacher.params.model_dump(exclude_none=True)
    misplaced = next((k for k, v in params.items() if k != "extra_body" and has_env_ref(v)), None)
    if misplaced:  # only headers and extra_body are resolved: elsewhere it would be sent as {"env": NAME}
        return f"teacher.params.{misplaced}: {{env: ...}} is read only in teacher.headers and teacher.params.extra_body: move it there"
    found = literal_keys(params, "teacher.params")
    if found:
        return (f"{found} holds a literal value that looks like a key or token: put it in an environment variable and write "
                "{env: VARIABLE} there (it is read at request time and never written)")
    if teacher.mode == "batch" and has_env_ref(params.get("extra_body")):
        return "teacher.params.extra_body: {env: ...} values are not supported with teacher.mode: batch (batch files are written to disk); use teacher.headers"
    return None


def has_env_ref(value: Any) -> bool:
    if is_env_ref(value):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(has_env_ref(v) for v in items)


def _same_url(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


class Limits(_Strict):
    concurrency: int = Field(default=64, ge=1)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=600, gt=0)
    max_retries: int = Field(default=8, ge=0)
    max_backoff_s: float = Field(default=60, gt=0)
    # Checked for every row before anything is sent: a runaway row (a 50 MB problem) is refused
    # with its file, row and column, never paid for. 1 MB of prompt is ~250k tokens, past any
    # context window; raise them for a teacher that takes more.
    max_problem_bytes: int = Field(default=500_000, gt=0)
    max_prompt_bytes: int = Field(default=1_000_000, gt=0)
    # An answer (CoT + completion) longer than this is stored (it was paid for) and rejected by
    # every chain's `response` step as `too_large` (curator/judge/filters/response.py).
    max_answer_chars: int = Field(default=1_000_000, gt=0)


class PerPrompt(_Strict):
    """Sample each prompt until it has `accepted` answers the chain's sample steps accept, or
    `max_samples` answers in all (curator/sample/per_prompt.py)."""

    accepted: int = Field(ge=1)
    max_samples: int = Field(ge=1)


class Budget(_Strict):
    max_usd: float | None = Field(default=None, gt=0)
    max_accepted: int | None = Field(default=None, gt=0)
    per_prompt: PerPrompt | None = None


class Store(_Strict):
    shard_rows: int = Field(default=20_000, gt=0)  # compact the journal into a shard at this size
    flush_interval_s: float = Field(default=0.05, gt=0)


class Manifest(_Strict):
    name: str
    source: Source
    prompt: PromptTemplate | str
    teacher: Teacher
    limits: Limits = Field(default_factory=Limits)
    filters: str | dict[str, Any] | list[Any] | None = None
    output: str
    budget: Budget = Field(default_factory=Budget)
    store: Store = Field(default_factory=Store)
    # Where the chain's dataset steps (near-dup) run once sampling ends: this process, or Ray
    # (`pip install 'curator[ray]'`; ray_address joins a cluster, none starts a local Ray).
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None

    # Set by load_manifest: where relative paths resolve.
    base_dir: Path = Field(default=Path("."), exclude=True)
    manifest_path: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _no_secrets(self) -> Manifest:
        problem = secret_problem(self.teacher)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _per_prompt(self) -> Manifest:
        pp, n = self.budget.per_prompt, self.teacher.params.n
        if pp is not None:
            if pp.max_samples < n:
                raise ValueError(f"budget.per_prompt.max_samples ({pp.max_samples}) must be >= teacher.params.n ({n}), the first round")
            if self.filters is None:
                raise ValueError("budget.per_prompt needs a filter chain (filters:) whose sample steps decide what is accepted")
            if self.teacher.mode == "batch":
                # A batch returns its rows hours later: top-ups would wait a batch each round.
                raise ValueError("budget.per_prompt samples in rounds as verdicts arrive; it needs teacher.mode: online")
        return self

    def resolve(self, p: str | Path) -> Path:
        path = resolve_path(p, self.base_dir)
        return path if is_pkg(p) else path.resolve()

    def portable(self, p: str) -> str:
        """`p` as written into the resolved manifest: absolute, or `pkg:` as is (it resolves on
        any machine with the package), so `curator resume OUT` reads it from any folder."""
        return p if is_pkg(p) else str(self.resolve(p))

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.output)

    def template(self) -> PromptTemplate:
        if isinstance(self.prompt, PromptTemplate):
            return self.prompt
        path = self.resolve(self.prompt)
        data = _read_yaml(path)
        try:
            return PromptTemplate.model_validate(data)
        except ValidationError as e:
            raise ManifestError(f"{path}: {_first_error(e)}") from None

    def redacted(self) -> dict[str, Any]:
        """The resolved manifest as stored in receipts: the key is only ever named, never read."""
        data = self.model_dump(mode="json")
        data["prompt"] = self.template().model_dump()
        return data


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    if not err["loc"] and err["type"] == "value_error":  # a check across fields names its fields itself
        return msg + more
    return f"field '{loc}': {msg}" + (f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else "")


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ManifestError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ManifestError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path).expanduser().resolve()
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest is a YAML mapping (name, source, prompt, teacher, output...)")
    try:
        m = Manifest.model_validate(data)
    except ValidationError as e:
        raise ManifestError(f"{path}: {_first_error(e)}") from None
    m.base_dir = path.parent
    m.manifest_path = path
    m.template()  # fail now, not mid-run, on a bad template file
    return m
