"""`curator serve` (the local OpenAI-compatible teacher) and `curator demo` (a run against it)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curator.cli.common import guard, print_run_summary

O = typer.Option


def serve(
    host: str = O("127.0.0.1"),
    port: int = O(8000, help="0 picks a free port"),
    config: Optional[Path] = O(None, help="server config YAML (latency, outcome mix, faults...)"),
    config_json: Optional[str] = O(None, help="server config as a JSON object (applied after --config)"),
    problems: Optional[str] = O(None, help="JSONL/Parquet/CSV problem file whose gold answers the scripted teacher uses"),
    models: Optional[str] = O(None, help="comma-separated model names"),
    api_key: Optional[str] = O(None, help="the key the server requires (default: any)"),
    latency_ms: Optional[float] = O(None),
    jitter_ms: Optional[float] = O(None),
    cot_placement: Optional[str] = O(None, help="reasoning_content | reasoning | think | think_unopened | none"),
    cot_words: Optional[int] = O(None),
    mix: Optional[str] = O(None, help="outcome weights, e.g. right=0.8,wrong=0.2"),
    id_column: Optional[str] = O(None),
    problem_column: Optional[str] = O(None),
    answer_column: Optional[str] = O(None),
    seed: Optional[int] = O(None),
    n_mode: Optional[str] = O(None, help="support | ignore | reject"),
    cached_fraction: Optional[float] = O(None),
    fault_rate: Optional[str] = O(None, help="fault probabilities, e.g. 429=0.05,500=0.01"),
    fail_first: Optional[str] = O(None, help="first-k failures per request body, e.g. 429=1"),
    retry_after_s: Optional[float] = O(None),
    hang_s: Optional[float] = O(None),
    collapse_after: Optional[int] = O(None),
    tokens_per_word: Optional[float] = O(None),
    request_log: Optional[str] = O(None, help="JSONL file: one line per chat request"),
) -> None:
    """Start the local OpenAI-compatible teacher (scripted answers, latency, injected faults)."""
    options = {k: v for k, v in locals().items() if k not in ("host", "port", "config", "config_json")}
    from curator.teacher.config import config_from_options
    from curator.teacher.runner import serve as do_serve

    cfg = guard(lambda: config_from_options(config, config_json, **options))
    guard(lambda: do_serve(cfg, host=host, port=port))  # a bad problems file or a busy port: one line


DEMO = Path(__file__).resolve().parents[1] / "teacher" / "demo"  # ships inside the package


def run_demo(out: Path | None = None, progress: bool = True):
    from curator.config import load_manifest
    from curator.run import run_manifest
    from curator.teacher.config import ServerConfig
    from curator.teacher.runner import ServerProcess

    manifest = load_manifest(DEMO / "manifest.yaml")
    manifest.output = str((out if out is not None else Path.cwd() / "out" / "demo").resolve())
    port = int(manifest.teacher.base_url.split(":")[-1].split("/")[0])
    try:
        server = ServerProcess(ServerConfig.from_yaml(DEMO / "server.yaml"), port=port)
    except (RuntimeError, TimeoutError) as e:  # the server's own error line (e.g. port in use) is above
        from curator.errors import RunError

        why = "the line above says why" if isinstance(e, RuntimeError) else str(e)
        raise RunError(f"the demo's local teacher did not start on port {port} ({why}); "
                       f"is another `curator demo` or `curator serve --port {port}` running?") from None
    try:
        return run_manifest(manifest, progress=progress)
    finally:
        server.stop()


def demo(
    out: Optional[Path] = O(None, help="output directory (default: ./out/demo)"),
    progress: bool = True,
) -> None:
    """Run the demo manifest against a local teacher this command starts itself (no API key)."""
    from curator.store import catalog

    result = guard(lambda: run_demo(out=out, progress=progress))
    print_run_summary(result)
    rows = catalog.query(result.out_dir, "SELECT coalesce(reject_reason, 'accepted'), count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC")
    print(f"demo output in {result.out_dir}:")
    for reason, n in rows:
        print(f"  {reason}: {n}")
    print(f"next: curator status {result.out_dir} | curator report {result.out_dir} | curator export {result.out_dir} --format messages")
