"""The shapes an export writes, one function per format (TRL messages, prompt/completion,
ShareGPT, Alpaca, the HF dataset's full rows), the options that choose among them, and the
trainer configs that read them (LLaMA-Factory's dataset_info.json, an axolotl snippet)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from curator.errors import ExportError

FORMATS = ("hf", "messages", "prompt-completion", "sharegpt", "alpaca")
COT_MODES = ("think", "field", "thought-solution")
SHAREGPT_ROLES = {"human-gpt": ("human", "gpt"), "user-assistant": ("user", "assistant")}


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
    all_configs: bool = False  # every configuration OUT holds, not only the latest run's

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
        # The prompt's difficulty (catalog view `prompts`): share of its samples the sample steps accepted.
        "pass_rate": row.get("pass_rate"),
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
            "pass_rate": Value("float64"),
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
