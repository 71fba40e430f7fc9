"""The `curator` command line: the Typer app alone. Each command lives in the module of its group
(run, report, export, teacher) and is registered here, so no command module imports this one."""

from __future__ import annotations

import typer

from curator.cli import batch, export, report, run, teacher

# No locals in tracebacks: a frame's locals can hold the API key.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Buy chain-of-thought from a teacher, keep what is right and clean, ship it to SFT.")

app.command()(run.run)
app.command()(run.resume)
app.command()(run.status)
app.command(name="filter")(run.filter_cmd)
app.command()(report.report)
app.command()(report.estimate)
app.command()(report.view)
app.command()(export.export)
app.command()(teacher.serve)
app.command()(teacher.demo)
app.add_typer(batch.app, name="batch")


def main() -> None:  # pragma: no cover
    app(prog_name="curator")
