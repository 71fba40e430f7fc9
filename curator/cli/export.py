"""`curator export`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curator.cli.common import err, fail as _fail, guard


def export(
    out: Path = typer.Argument(..., help="an output directory of a run"),
    format: str = typer.Option("messages", "--format", "-f", help="hf | messages | prompt-completion | sharegpt | alpaca"),
    to: Optional[Path] = typer.Option(None, "--to", help="export directory (default OUT/export/FORMAT): new, empty, or an earlier export's (its own files are replaced); other files there are refused, never touched"),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="also upload to this Hub dataset repo (user/name) with datasets' push_to_hub"),
    private: Optional[bool] = typer.Option(None, "--private/--public", help="visibility of a Hub repo the push creates"),
    include_rejected: bool = typer.Option(False, "--include-rejected", help="hf only: every stored sample, with accepted/reject_reason/verdicts"),
    cot: str = typer.Option("think", "--cot", help="think: <think>..</think> before the answer; field: reasoning_content; thought-solution: Stratos/OpenThoughts tags"),
    system: Optional[str] = typer.Option(None, "--system", help="system prompt replacing the teacher's ('' drops it); default: keep the prompt as sent"),
    test_size: float = typer.Option(0.05, "--test-size", help="fraction of prompts in the test split (or a whole number of prompts); 0: no test split"),
    seed: int = typer.Option(0, "--seed", help="seed of the split and of the row order"),
    license: Optional[str] = typer.Option(None, "--license", help="license in the dataset card (default: the manifest's, else 'other')"),
    name: Optional[str] = typer.Option(None, "--name", help="dataset name in dataset_info.json (default: the run's name)"),
    sharegpt_roles: str = typer.Option("human-gpt", "--sharegpt-roles", help="sharegpt 'from' values: human-gpt or user-assistant"),
    allow_secrets: bool = typer.Option(False, "--allow-secrets", help="push even when the text holds key-shaped strings (sk-..., hf_..., Bearer ...)"),
    all_configs: bool = typer.Option(False, "--all-configs", help="every configuration OUT holds (model, params, template), not only the latest run's"),
) -> None:
    """Export accepted samples for the student: a Hugging Face dataset, or a file an SFT trainer reads."""
    from curator.ship.export import ExportOptions, HubError, export as do_export, push_to_hub as do_push

    opts = guard(lambda: ExportOptions(format=format, to=to, include_rejected=include_rejected, cot=cot, system=system, test_size=test_size,
                         seed=seed, license=license, name=name, sharegpt_roles=sharegpt_roles, all_configs=all_configs))

    result = guard(lambda: do_export(out, opts))
    parts = ", ".join(f"{k} {v}" for k, v in result.splits.items())
    err.print(f"exported {sum(result.splits.values())} samples ({parts}) as {result.format} to {result.dir}", highlight=False, soft_wrap=True)
    if result.keys.found:
        err.print(f"warning: {result.keys.summary()}; the values are not shown: check the data before sharing it"
                  + ("" if allow_secrets else " (--push-to-hub refuses without --allow-secrets)"), style="yellow", highlight=False, soft_wrap=True)
    if result.other_configs:
        err.print(f"left out {result.other_configs} samples of other configurations than the latest run's (`curator report` shows them; "
                  "--all-configs exports them too)", highlight=False, soft_wrap=True)
    if push_to_hub:
        def push() -> str:
            try:
                return do_push(result, opts, push_to_hub, private=private, allow_secrets=allow_secrets)
            except HubError as e:
                _fail(str(e), 4)  # its own exit code: the local export is complete

        url = guard(push)
        err.print(f"pushed to {url}", highlight=False, soft_wrap=True)
