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
  all:     export.json (what was exported, how, and every file written with its sha256),
           dataset_info.json (LLaMA-Factory) and axolotl.yaml where that trainer reads the format.
The folder may be new, empty, or an earlier export's (only its own unchanged files are replaced);
any other file there is refused, never touched (curator/ship/target.py).

Configurations: only the samples of the latest run's configuration (endpoint, model, params,
template: curator/sample/configs.py) unless `all_configs`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HF_DATA_FILES = {"train": "data/train-00000-of-00001.parquet", "test": "data/test-00000-of-00001.parquet"}
HF_ARROW_DIR = "arrow"

from curator.errors import ExportError, HubError  # noqa: F401  (raised here; defined with the root)
from curator.ship.formats import (  # noqa: F401  (re-exported: the export's public names)
    COT_MODES, FORMATS, SHAREGPT_ROLES, ExportOptions, assistant_message, assistant_text, axolotl_config, hf_features,
    llamafactory_info, prompt_messages, SHAPERS, _slug, to_alpaca, to_hf, to_messages, to_prompt_completion, to_sharegpt,
)
from curator.ship.card import collect_summary, render_card
from curator.ship.keyscan import KeyScan, scan_rows
from curator.ship.target import MARKER, abandon, check_target, install, staging_dir
from curator.sample.configs import current_ids
from curator.store.layout import OutputDir


@dataclass
class ExportResult:
    dir: Path
    format: str
    splits: dict[str, int]
    files: list[str]
    rows: dict[str, list[dict[str, Any]]] = field(repr=False, default_factory=dict)
    summary: dict[str, Any] = field(repr=False, default_factory=dict)
    keys: KeyScan = field(repr=False, default_factory=KeyScan)  # key-shaped strings in the exported text
    other_configs: int = 0  # samples left out: of other configurations than the latest run's (no --all-configs)


# ---------------------------------------------------------------- reading the output directory

_SQL = """
SELECT s.key, s.run, s.prompt_id, s.sample_index, s.source, s.problem, s.gold, s.row_json, s.messages_json,
       s.cot, s.completion, s.cot_source, s.finish_reason, s.prompt_tokens, s.completion_tokens,
       s.reasoning_tokens, s.cached_tokens, s.cost_usd, s.model, s.endpoint, s.params_json,
       s.accepted, s.reject_reason, s.config_id, v.verdicts, p.pass_rate
FROM samples s LEFT JOIN (
    SELECT key, list({'step': step, 'filter': filter, 'passed': passed, 'reason': reason, 'details': details} ORDER BY step) AS verdicts
    FROM verdicts GROUP BY key
) v USING (key)
LEFT JOIN (SELECT prompt_id, pass_rate FROM prompts) p USING (prompt_id)
"""


def _query(con, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def load_rows(out_dir: Path, include_rejected: bool, configs: set[str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The rows to export (of the given configurations; None: all) and how many rows of other
    configurations were left out."""
    from curator.store import catalog

    con = catalog.connect(out_dir, read_only=True)
    try:
        where = "true" if include_rejected else "s.accepted"
        if not configs:
            return _query(con, f"{_SQL} WHERE {where}"), 0
        ids = sorted(configs)
        left = con.execute(f"SELECT count(*) FROM samples s WHERE {where} AND NOT list_contains(?, s.config_id)", [ids]).fetchone()[0]
        return _query(con, f"{_SQL} WHERE {where} AND list_contains(?, s.config_id)", [ids]), left
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


def default_target(out_dir: Path, opts: ExportOptions) -> Path:
    return out_dir / "export" / opts.format


def export(out_dir: str | Path, opts: ExportOptions) -> ExportResult:
    """Write the export of `out_dir` to `opts.to` (default OUT/export/FORMAT), replacing an earlier
    export there; a folder holding anything else is refused (curator/ship/target.py)."""
    opts.check()
    out_dir = Path(out_dir)
    if not OutputDir(out_dir).is_output_dir():
        raise ExportError(f"{out_dir}: not a curator output directory (no manifest.resolved.yaml)")
    target = (Path(opts.to) if opts.to is not None else default_target(out_dir, opts)).absolute()  # `--to .` has a name
    own = check_target(target)

    configs = None if opts.all_configs else current_ids(out_dir)
    rows, other_configs = load_rows(out_dir, opts.include_rejected, configs)
    summary = collect_summary(out_dir, opts)
    if not rows:
        raise ExportError(
            f"{out_dir}: nothing to export: {summary['stored']} samples stored, {summary['accepted']} accepted, "
            f"{summary['rejected']} rejected, {summary['unjudged']} never judged"
            + ("; run a filter chain first (`curator filter OUT --chain ...`)" if summary["unjudged"] else "")
            + (f"; {other_configs} of them are of other configurations than the latest run's: --all-configs takes them" if other_configs else "")
        )
    splits = split_rows(rows, opts.test_size, opts.seed)
    shaper = SHAPERS[opts.format]
    shaped = {k: [shaper(r, opts) for r in v] for k, v in splits.items()}
    name = opts.name or _slug(summary["name"])

    tmp, created = staging_dir(target)
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
            # The configurations exported (curator/sample/configs.py): the latest run's unless --all-configs
            "configurations": sorted({r["config_id"] for r in rows if r["config_id"] is not None}),
        }
        written.append(MARKER)
        install(tmp, target, own, marker)
    except BaseException:
        abandon(tmp, target, created)
        raise
    return ExportResult(target, opts.format, counts, written, shaped, summary, scan_rows(rows), other_configs)


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


def push_to_hub(result: ExportResult, opts: ExportOptions, repo_id: str, *, private: bool | None = None, allow_secrets: bool = False) -> str:
    """Upload the export with `DatasetDict.push_to_hub`, then our card as README.md. Returns the dataset URL.
    Refused, before any call to the Hub, when the text holds key-shaped strings, unless allow_secrets."""
    if result.keys.found and not allow_secrets:
        raise HubError(f"not pushing to {repo_id}: the export holds {result.keys.summary()}; remove them from the data, or pass "
                       f"--allow-secrets to publish anyway; the export is in {result.dir}")
    from huggingface_hub import HfApi, get_token


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
