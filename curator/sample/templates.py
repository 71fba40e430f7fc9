"""Render a prompt template into chat messages.

Placeholders are `{{ column }}` (Jinja). LaTeX in templates (`\\boxed{}`, `\\frac{a}{b}`) passes
through untouched because Jinja only acts on `{{`, `{%` and `{#`; values are inserted verbatim.
A placeholder naming no column is an error that names it.

Templates render in Jinja's immutable sandbox: a template is code, and an output folder received
from someone else carries its template into `curator resume` (`{{ lipsum.__globals__ }}` and the
like reach `os` in a plain Environment). A null or missing value that would be printed is an
error naming the row, never the text "None" in a paid prompt.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from curator.config import ManifestError, PromptTemplate
from curator.errors import CuratorError


class _NullValue(CuratorError):
    """A `{{ expression }}` evaluated to None."""


def _finalize(value: Any) -> Any:
    if value is None:
        raise _NullValue
    return value


_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False, finalize=_finalize)


def _render(tpl: jinja2.Template, globals_: dict[str, Any], row: dict[str, Any]) -> str:
    """`tpl.render(row)` with the template's globals merged once (`globals_`), not per call:
    Template.render rebuilds them from a ChainMap every time, a third of the cost of a render
    (run start-up, once per prompt)."""
    ctx = tpl.new_context({**globals_, **row}, shared=True)
    try:
        return "".join(tpl.root_render_func(ctx))
    except Exception:
        return tpl.environment.handle_exception()


class Renderer:
    def __init__(self, template: PromptTemplate, where: str = "prompt"):
        self.where = where
        self._parts: list[tuple[str, jinja2.Template, dict[str, Any]]] = []
        self.placeholders: set[str] = set()
        for role, text in (("system", template.system), ("user", template.user)):
            if text is None:
                continue
            try:
                ast = _ENV.parse(text)
            except jinja2.TemplateSyntaxError as e:
                raise ManifestError(f"{where}: {role} template line {e.lineno}: {e.message}") from None
            self.placeholders |= meta.find_undeclared_variables(ast)
            tpl = _ENV.from_string(text)
            self._parts.append((role, tpl, dict(tpl.globals)))

    def check_columns(self, columns: set[str], source: str) -> None:
        missing = sorted(self.placeholders - columns - {"problem", "gold", "id"})
        if missing:
            raise ManifestError(
                f"{self.where}: placeholder {{{{ {missing[0]} }}}} has no column in {source}; columns are {', '.join(sorted(columns))}"
            )

    def render(self, row: dict[str, Any], at: str = "", max_bytes: int | None = None) -> list[dict[str, str]]:
        """The messages of one row. at: the row as errors name it ("data.jsonl: row 7 (id 'x')");
        max_bytes: limits.max_prompt_bytes."""
        absent = [name for name in self.placeholders if name not in row]
        if absent:  # a column only some rows have: printing it fails below, `{% if col %}` still works
            row = {**row, **dict.fromkeys(absent)}
        role = "user"
        try:
            out = []
            for role, tpl, globals_ in self._parts:
                out.append({"role": role, "content": _render(tpl, globals_, row)})
        except jinja2.exceptions.SecurityError as e:
            raise ManifestError(f"{self.where}: the {role} template tried an unsafe operation ({e}); templates render in a sandbox") from None
        except (_NullValue, jinja2.UndefinedError) as e:
            raise ManifestError(f"{at or 'a row'}: {self._null_column(row, absent, e)}; nothing was sent") from None
        except Exception as e:  # a filter or operator failing on this row's values
            raise ManifestError(f"{at or 'a row'}: the {role} template of {self.where} failed: {type(e).__name__}: {e}") from None
        if max_bytes is not None and sum(len(m["content"]) for m in out) * 4 > max_bytes:  # UTF-8: at most 4 bytes a character
            size = sum(len(m["content"].encode("utf-8")) for m in out)
            if size > max_bytes:
                raise ManifestError(f"{at or 'a row'}: the rendered prompt is {size:,} bytes, over limits.max_prompt_bytes ({max_bytes:,}); nothing was sent")
        return out

    def _null_column(self, row: dict[str, Any], absent: list[str], e: Exception) -> str:
        for name in sorted(self.placeholders):
            if name in absent:
                return f"column {name!r} is missing, and the template ({self.where}) uses it"
            if row.get(name) is None:
                return f"column {name!r} is null, and the template ({self.where}) uses it"
        detail = f" ({e})" if str(e) else ""
        return f"the template ({self.where}) prints a null or missing value{detail}"
