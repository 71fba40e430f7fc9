"""What every command shares: the error console, one-line failures, and the guard that turns any
expected failure into one line (never a traceback)."""

from __future__ import annotations

import typer
from rich.console import Console

err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    from curator.redact import redact

    # Escaped: "[REDACTED]" or "[Errno 28]" in a message is text, not rich markup.
    err.print(f"[red]error:[/] {escape(redact(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guard(fn):
    """Expected failures (the package's one error root, and OSError) end in one line; unexpected
    ones show a traceback with any API key masked (an exception message may quote a server's
    reply or a request header)."""
    from curator.errors import CuratorError, os_error_text

    try:
        return fn()
    except (CuratorError, FileNotFoundError) as e:
        fail(str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        fail(f"{where}{os_error_text(e)}")
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as e:
        import traceback

        from curator.redact import redact

        err.out(redact("".join(traceback.format_exception(e))).rstrip(), highlight=False)
        fail(f"unexpected {type(e).__name__}: {' '.join(str(e).split())[:300]} (traceback above)", 1)


def print_run_summary(result) -> None:
    s = result.stats
    cost = f"${s.cost_usd:.4f}" if s.cost_known else "unknown (no price for this model)"
    err.print(
        f"stored {s.stored} new samples ({s.already_stored} already stored) in {result.out_dir}; "
        f"requests {s.requests}, retries {s.retries}, failed prompts {s.failed}; cost this run {cost}"
        + (f"; accepted {s.accepted}/{s.judged}" if s.judged else ""),
        highlight=False,
    )
    for e in s.errors[:5]:
        err.print(f"  {e}", highlight=False, markup=False)
    for notice in s.notices[:5]:
        err.print(f"  note: {notice}", highlight=False, markup=False)
    if s.usage_estimated:
        err.print(f"  note: tokens and cost include local estimates for {s.usage_estimated} samples (the teacher sent no usage, or none to believe)", highlight=False)
    if s.stop_reason:
        err.print(f"stopped: {s.stop_reason}", highlight=False, markup=False)
    if s.failed:
        fail(f"{s.failed} prompts failed after retries; `curator resume {result.out_dir}` sends them again", 3)
