"""Export an output directory for the student: a Hugging Face dataset and the formats SFT trainers read.

What is exported: accepted samples only, unless `include_rejected` (then every stored sample, with
its verdicts: `hf` format only, because an SFT trainer learns every row it is given, and a rejected
row would teach the student a wrong or malformed answer).

The prompt is the request as sent to the teacher (`messages_json`: system message kept unless
`system` overrides it, `""` drops it); the answer is one assistant message whose CoT sits where
`cot` says:
  - `think`            `<think>\\n{cot}\\n</think>\\n\\n{completion}` (what open-r1 / R1 distills train on)
  - `field`            `{"role": "assistant", "content": completion, "reasoning_content": cot}`
                       (chat templates such as Qwen3's read it; message formats only)
  - `thought-solution` `<|begin_of_thought|>\\n\\n{cot}\\n\\n<|end_of_thought|>\\n\\n<|begin_of_solution|>\\n\\n
                       {completion}\\n\\n<|end_of_solution|>` (Bespoke-Stratos / OpenThoughts)

Split and order: test prompts (not samples: the n samples of one prompt never straddle the split)
are the `ceil(test_size * prompts)` prompts with the smallest sha256(seed, prompt_id) (an integer
test_size >= 1 is a number of prompts); rows inside a split are ordered by sha256(seed, key). Same
output directory + same options -> byte-identical files (no timestamps, no absolute paths).

Layout of the export directory:
  hf:      data/{train,test}-00000-of-00001.parquet, arrow/ (`save_to_disk`), README.md, ...
  others:  {train,test}.jsonl, README.md, ...
  all:     export.json (what was exported, how), dataset_info.json (LLaMA-Factory) and
           axolotl.yaml where that trainer reads the format.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

FORMATS = ("hf", "messages", "prompt-completion", "sharegpt", "alpaca")
COT_MODES = ("think", "field", "thought-solution")
SHAREGPT_ROLES = {"human-gpt": ("human", "gpt"), "user-assistant": ("user", "assistant")}
MARKER = "export.json"
HF_DATA_FILES = {"train": "data/train-00000-of-00001.parquet", "test": "data/test-00000-of-00001.parquet"}
HF_ARROW_DIR = "arrow"
# = curator.run.RESOLVED_MANIFEST, not imported from there: curator.run pulls in the sampler (openai, slow to import)
RESOLVED_MANIFEST = "manifest.resolved.yaml"


class ExportError(Exception):
    """One line for the user: what is wrong with the export request or the output directory."""


class HubError(Exception):
    """The upload to the Hub failed; the local export is complete."""


@dataclass
class ExportOptions:
    format: str = "messages"
    to: Path | None = None
    include_rejected: bool = False
    cot: str = "think"
    system: str | None = None  # None: keep the teacher's system message; "": drop it; text: replace it
    test_size: float = 0.05
    seed: int = 0
    license: str | None = None
    name: str | None = None  # dataset name in dataset_info.json / the card
    sharegpt_roles: str = "human-gpt"

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if self.cot not in COT_MODES:
            raise ExportError(f"unknown --cot {self.cot!r}; choose one of {', '.join(COT_MODES)}")
        if self.sharegpt_roles not in SHAREGPT_ROLES:
            raise ExportError(f"unknown --sharegpt-roles {self.sharegpt_roles!r}; choose one of {', '.join(SHAREGPT_ROLES)}")
        if self.cot == "field" and self.format in ("sharegpt", "alpaca"):
            raise ExportError(f"--cot field puts the CoT in the assistant message's reasoning_content, which {self.format} has no place for; use --cot think or thought-solution, or --format messages")
        if self.include_rejected and self.format != "hf":
            raise ExportError("--include-rejected is for --format hf only: an SFT trainer learns every row of its file, so rejected samples would teach the student wrong answers")
        if self.test_size < 0 or (self.test_size >= 1 and self.test_size != int(self.test_size)):
            raise ExportError(f"--test-size {self.test_size}: a fraction in [0, 1) of the prompts, or a whole number of prompts")


@dataclass
class ExportResult:
    dir: Path
    format: str
    splits: dict[str, int]
    files: list[str]
    rows: dict[str, list[dict[str, Any]]] = field(repr=False, default_factory=dict)
    summary: dict[str, Any] = field(repr=False, default_factory=dict)


# ---------------------------------------------------------------- reading the output directory

_SQL = """
SELECT s.key, s.run, s.prompt_id, s.sample_index, s.source, s.problem, s.gold, s.row_json, s.messages_json,
       s.cot, s.completion, s.cot_source, s.finish_reason, s.prompt_tokens, s.completion_tokens,
       s.reasoning_tokens, s.cached_tokens, s.cost_usd, s.model, s.endpoint, s.params_json,
       s.accepted, s.reject_reason, v.verdicts
FROM samples s LEFT JOIN (
    SELECT key, list({'step': step, 'filter': filter, 'passed': passed, 'reason': reason, 'details': details} ORDER BY step) AS verdicts
    FROM verdicts GROUP BY key
) v USING (key)
"""


def _query(con, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def load_rows(out_dir: Path, include_rejected: bool) -> list[dict[str, Any]]:
    from curator.store import catalog

    con = catalog.connect(out_dir, read_only=True)
    try:
        return _query(con, _SQL + ("" if include_rejected else " WHERE s.accepted"))
    finally:
        con.close()


def _h(seed: int, value: str) -> str:
    return hashlib.sha256(f"{seed}\x00{value}".encode()).hexdigest()


def split_rows(rows: list[dict[str, Any]], test_size: float, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Test prompts by seeded hash rank; rows ordered by seeded hash of their key inside each split."""
    prompts = sorted({r["prompt_id"] for r in rows}, key=lambda p: (_h(seed, p), p))
    if test_size >= 1:
        n_test = int(test_size)
    else:
        n_test = math.ceil(test_size * len(prompts)) if test_size > 0 else 0
    n_test = min(n_test, max(len(prompts) - 1, 0))  # train is never left empty
    test = set(prompts[:n_test])
    order = lambda r: (_h(seed, r["key"]), r["key"])  # noqa: E731
    out = {"train": sorted((r for r in rows if r["prompt_id"] not in test), key=order)}
    if n_test:
        out["test"] = sorted((r for r in rows if r["prompt_id"] in test), key=order)
    return out


# ---------------------------------------------------------------- shaping one record

def prompt_messages(row: dict[str, Any], system: str | None) -> list[dict[str, str]]:
    """The request as sent to the teacher; `system` (not None) replaces its system message ("" drops it)."""
    msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in json.loads(row["messages_json"] or "[]")]
    if system is not None:
        msgs = [m for m in msgs if m["role"] != "system"]
        if system:
            msgs.insert(0, {"role": "system", "content": system})
    return msgs


def _split_system(msgs: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
    return system, [m for m in msgs if m["role"] != "system"]


def assistant_text(cot: str | None, completion: str | None, mode: str) -> str:
    cot, completion = (cot or "").strip(), (completion or "").strip()
    if mode == "think":
        return f"<think>\n{cot}\n</think>\n\n{completion}"
    if mode == "thought-solution":
        return f"<|begin_of_thought|>\n\n{cot}\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n{completion}\n\n<|end_of_solution|>"
    raise ValueError(mode)


def assistant_message(row: dict[str, Any], mode: str) -> dict[str, str]:
    if mode == "field":
        return {"role": "assistant", "content": (row["completion"] or "").strip(), "reasoning_content": (row["cot"] or "").strip()}
    return {"role": "assistant", "content": assistant_text(row["cot"], row["completion"], mode)}


def to_messages(row: dict[str, Any], opts: ExportOptions) -> dict[str, Any]:
    """TRL conversational language modeling: {"messages": [system?, user, assistant]}."""
    return {"messages": prompt_messages(row, opts.system) + [assistant_message(row, opts.cot)]}


def to_prompt_completion(row: dict[str, Any], opts: ExportOptions) -> dict[str, Any]:
    """TRL conversational prompt-completion: {"prompt": [system?, user], "completion": [assistant]}."""
    return {"prompt": prompt_messages(row, opts.system), "completion": [assistant_message(row, opts.cot)]}


def to_sharegpt(row: dict[str, Any], opts: ExportOptions) -> dict[str, Any]:
    """ShareGPT as OpenThoughts / Bespoke-Stratos publish it: {"system", "conversations": [{from, value}]}."""
    user_tag, gpt_tag = SHAREGPT_ROLES[opts.sharegpt_roles]
    system, turns = _split_system(prompt_messages(row, opts.system))
    tags = {"user": user_tag, "assistant": gpt_tag}
    conv = [{"from": tags.get(m["role"], m["role"]), "value": m["content"]} for m in turns]
    conv.append({"from": gpt_tag, "value": assistant_text(row["cot"], row["completion"], opts.cot)})
    return {"system": system, "conversations": conv}


def to_alpaca(row: dict[str, Any], opts: ExportOptions) -> dict[str, Any]:
    """Alpaca: {"instruction", "input", "output", "system"} (input is empty: the prompt is one user turn)."""
    system, turns = _split_system(prompt_messages(row, opts.system))
    if len(turns) != 1 or turns[0]["role"] != "user":
        raise ExportError(f"sample {row['key'][:12]}: alpaca holds one user turn, this prompt has {[m['role'] for m in turns]}; use --format messages or sharegpt")
    return {"instruction": turns[0]["content"], "input": "", "output": assistant_text(row["cot"], row["completion"], opts.cot), "system": system}


def to_hf(row: dict[str, Any], opts: ExportOptions) -> dict[str, Any]:
    """The full record: ids, problem, messages (shaped by --cot), raw CoT/answer, teacher, usage, cost, verdicts."""
    prompt = prompt_messages(row, opts.system)
    messages = prompt + [assistant_message(row, opts.cot)]
    if opts.cot == "field":  # one struct type for every message
        messages = [{**m, "reasoning_content": m.get("reasoning_content")} for m in messages]
    return {
        "id": row["key"],
        "prompt_id": row["prompt_id"],
        "sample_index": row["sample_index"],
        "source": row["source"],
        "problem": row["problem"],
        "gold": row["gold"],
        "request_messages": prompt,
        "messages": messages,
        "cot": row["cot"],
        "completion": row["completion"],
        "cot_source": row["cot_source"],
        "finish_reason": row["finish_reason"],
        "teacher": {"model": row["model"], "endpoint": row["endpoint"], "params": row["params_json"]},
        "usage": {k: row[k] for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")},
        "cost_usd": row["cost_usd"],
        "accepted": row["accepted"],
        "reject_reason": row["reject_reason"],
        "verdicts": row["verdicts"] or [],
        "source_row": row["row_json"],
    }


SHAPERS: dict[str, Callable[[dict[str, Any], ExportOptions], dict[str, Any]]] = {
    "hf": to_hf,
    "messages": to_messages,
    "prompt-completion": to_prompt_completion,
    "sharegpt": to_sharegpt,
    "alpaca": to_alpaca,
}


def hf_features(cot: str):
    """`datasets.Features` of the `hf` format."""
    from datasets import Features, List, Value

    s = Value("string")
    msg = {"role": s, "content": s}
    return Features(
        {
            "id": s,
            "prompt_id": s,
            "sample_index": Value("int32"),
            "source": s,
            "problem": s,
            "gold": s,
            "request_messages": List(msg),
            "messages": List({**msg, "reasoning_content": s} if cot == "field" else msg),
            "cot": s,
            "completion": s,
            "cot_source": s,
            "finish_reason": s,
            "teacher": {"model": s, "endpoint": s, "params": s},
            "usage": {k: Value("int64") for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")},
            "cost_usd": Value("float64"),
            "accepted": Value("bool"),
            "reject_reason": s,
            "verdicts": List({"step": Value("int32"), "filter": s, "passed": Value("bool"), "reason": s, "details": s}),
            "source_row": s,
        }
    )


# ---------------------------------------------------------------- trainer configs written beside the files

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower() or "curator"


def llamafactory_info(fmt: str, files: dict[str, str], name: str, opts: ExportOptions) -> dict[str, Any] | None:
    """LLaMA-Factory `dataset_info.json` entries (file_name relative to this directory = `dataset_dir`)."""
    if fmt == "prompt-completion" or (opts.cot == "field" and fmt in ("messages", "hf")):
        return None  # no such LLaMA-Factory format / it reads `content` only and would drop the CoT
    if fmt == "alpaca":
        base = {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}}
    elif fmt == "sharegpt":
        user_tag, gpt_tag = SHAREGPT_ROLES[opts.sharegpt_roles]
        base = {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system"},
                "tags": {"role_tag": "from", "content_tag": "value", "user_tag": user_tag, "assistant_tag": gpt_tag}}
    else:  # messages, hf: OpenAI format
        base = {"formatting": "sharegpt", "columns": {"messages": "messages"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"}}
    out = {}
    for split, path in files.items():
        out[name if split == "train" else f"{name}_{split}"] = {"file_name": path, **base}
    return out


def axolotl_config(fmt: str, files: dict[str, str], opts: ExportOptions) -> dict[str, Any] | None:
    """axolotl `datasets:` (and `test_datasets:`) entries for the exported files."""
    if fmt == "prompt-completion":
        return None
    ds_type = "parquet" if fmt == "hf" else "json"
    if fmt == "alpaca":
        entry: dict[str, Any] = {"type": "alpaca"}
    elif fmt == "sharegpt":
        user_tag, gpt_tag = SHAREGPT_ROLES[opts.sharegpt_roles]
        entry = {"type": "chat_template", "field_messages": "conversations", "field_system": "system",
                 "message_property_mappings": {"role": "from", "content": "value"},
                 "roles": {"user": [user_tag], "assistant": [gpt_tag]}, "roles_to_train": ["assistant"]}
    else:
        entry = {"type": "chat_template", "field_messages": "messages",
                 "message_property_mappings": {"role": "role", "content": "content"}, "roles_to_train": ["assistant"]}
        if opts.cot == "field":
            entry.update({"field_thinking": "reasoning_content", "template_thinking_key": "reasoning_content"})
    cfg: dict[str, Any] = {"datasets": [{"path": files["train"], "ds_type": ds_type, "split": "train", **entry}]}
    if "test" in files:
        cfg["test_datasets"] = [{"path": files["test"], "ds_type": ds_type, "split": "train", **copy.deepcopy(entry)}]
    return cfg


# ---------------------------------------------------------------- writing

def _dump_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _hf_dataset_dict(shaped: dict[str, list[dict[str, Any]]], opts: ExportOptions):
    import datasets
    from datasets import Dataset, DatasetDict

    datasets.disable_progress_bars()
    if opts.format == "hf":
        feats = hf_features(opts.cot)
        return DatasetDict({k: Dataset.from_list(v, features=feats) for k, v in shaped.items()})
    return DatasetDict({k: Dataset.from_list(v) for k, v in shaped.items()})


def _write_hf(shaped: dict[str, list[dict[str, Any]]], opts: ExportOptions, tmp: Path) -> dict[str, str]:
    dd = _hf_dataset_dict(shaped, opts)
    files = {}
    for split, ds in dd.items():
        rel = HF_DATA_FILES[split]
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(tmp / rel))
        files[split] = rel
    dd.save_to_disk(str(tmp / HF_ARROW_DIR))
    return files


def _prepare_target(target: Path) -> None:
    if target.exists():
        if not target.is_dir():
            raise ExportError(f"{target}: exists and is not a directory")
        if any(target.iterdir()) and not (target / MARKER).exists():
            raise ExportError(f"{target}: exists and is not a curator export (no {MARKER}); choose another --to or empty it")


def _swap_in(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def default_target(out_dir: Path, opts: ExportOptions) -> Path:
    return out_dir / "export" / opts.format


def export(out_dir: str | Path, opts: ExportOptions) -> ExportResult:
    """Write the export of `out_dir` to `opts.to` (default OUT/export/FORMAT), replacing an earlier export there."""
    from curator.card import collect_summary, render_card

    opts.check()
    out_dir = Path(out_dir)
    if not (out_dir / RESOLVED_MANIFEST).exists():
        raise ExportError(f"{out_dir}: not a curator output directory (no {RESOLVED_MANIFEST})")
    target = Path(opts.to) if opts.to is not None else default_target(out_dir, opts)
    _prepare_target(target)

    rows = load_rows(out_dir, opts.include_rejected)
    summary = collect_summary(out_dir, opts)
    if not rows:
        raise ExportError(
            f"{out_dir}: nothing to export: {summary['stored']} samples stored, {summary['accepted']} accepted, "
            f"{summary['rejected']} rejected, {summary['unjudged']} never judged"
            + ("; run a filter chain first (`curator filter OUT --chain ...`)" if summary["unjudged"] else "")
        )
    splits = split_rows(rows, opts.test_size, opts.seed)
    shaper = SHAPERS[opts.format]
    shaped = {k: [shaper(r, opts) for r in v] for k, v in splits.items()}
    name = opts.name or _slug(summary["name"])

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        if opts.format == "hf":
            files = _write_hf(shaped, opts, tmp)
        else:
            files = {}
            for split, recs in shaped.items():
                files[split] = f"{split}.jsonl"
                _dump_jsonl(recs, tmp / files[split])
        written = sorted(files.values())
        lf = llamafactory_info(opts.format, files, name, opts)
        if lf is not None:
            (tmp / "dataset_info.json").write_text(json.dumps(lf, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            written.append("dataset_info.json")
        ax = axolotl_config(opts.format, files, opts)
        if ax is not None:
            head = ("# axolotl dataset entries for this export; merge them into your axolotl config.\n"
                    "# Paths are relative to this directory: run axolotl from here, or make them absolute.\n")
            (tmp / "axolotl.yaml").write_text(head + yaml.safe_dump(ax, sort_keys=False, allow_unicode=True), encoding="utf-8")
            written.append("axolotl.yaml")
        counts = {k: len(v) for k, v in shaped.items()}
        (tmp / "README.md").write_text(render_card(summary, opts, files, counts, name, extras=written), encoding="utf-8")
        written.append("README.md")
        marker = {
            "curator_export": 1,
            "name": name,
            "format": opts.format,
            "cot": opts.cot,
            "system": opts.system,
            "include_rejected": opts.include_rejected,
            "test_size": opts.test_size,
            "seed": opts.seed,
            "sharegpt_roles": opts.sharegpt_roles if opts.format == "sharegpt" else None,
            "splits": counts,
            "files": files,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        written.append(MARKER)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(target, opts.format, counts, written, shaped, summary)


# ---------------------------------------------------------------- the Hub

def hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except Exception:  # pragma: no cover
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _network_error(e: BaseException) -> bool:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        mod = type(e).__module__ or ""
        name = type(e).__name__
        if isinstance(e, (ConnectionError, TimeoutError)) or mod.startswith(("httpx", "httpcore", "requests", "urllib3")) and (
            "Connect" in name or "Timeout" in name or "Network" in name or "Protocol" in name or "Transport" in name
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


def push_to_hub(result: ExportResult, opts: ExportOptions, repo_id: str, *, private: bool | None = None) -> str:
    """Upload the export with `DatasetDict.push_to_hub`, then our card as README.md. Returns the dataset URL."""
    from huggingface_hub import HfApi, get_token

    from curator.card import render_card

    endpoint = hub_endpoint()
    if not get_token():
        raise HubError(f"cannot push to {repo_id}: no Hugging Face token (set HF_TOKEN or run `hf auth login`); the export is in {result.dir}")
    dd = _hf_dataset_dict(result.rows, opts)
    hub_files = {k: f"data/{k}-*" for k in result.rows}
    card = render_card(result.summary, opts, hub_files, result.splits, opts.name or _slug(result.summary["name"]), repo_id=repo_id)
    try:
        dd.push_to_hub(repo_id, private=private, commit_message="Upload dataset exported by curator")
        HfApi().upload_file(path_or_fileobj=card.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                            repo_type="dataset", commit_message="Dataset card from curator")
    except Exception as e:  # one line, whatever the client raised
        if _network_error(e):
            raise HubError(f"cannot push to {repo_id}: the Hugging Face Hub at {endpoint} cannot be reached ({type(e).__name__}); the export is in {result.dir}") from None
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(f"cannot push to {repo_id}: the Hub at {endpoint} refused the token (HTTP {status}); the export is in {result.dir}") from None
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HubError(f"cannot push to {repo_id} at {endpoint}: {msg[:300]}; the export is in {result.dir}") from None
    return f"{endpoint}/datasets/{repo_id}"
