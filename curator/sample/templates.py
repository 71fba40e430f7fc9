"""Render a prompt template into chat messages.

Placeholders are `{{ column }}` (Jinja). LaTeX in templates (`\\boxed{}`, `\\frac{a}{b}`) passes
through untouched because Jinja only acts on `{{`, `{%` and `{#`; values are inserted verbatim.
A placeholder naming no column is an error that names it.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2 import meta

from curator.config import ManifestError, PromptTemplate

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


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

    def render(self, row: dict[str, Any]) -> list[dict[str, str]]:
        # Template.render builds its context by merging the globals (a ChainMap) into the row for
        # every call; merged once here, the same context costs a third (run start-up, per prompt).
        out = []
        for role, tpl, globals_ in self._parts:
            ctx = tpl.new_context({**globals_, **row}, shared=True)
            try:
                content = "".join(tpl.root_render_func(ctx))
            except Exception:
                content = tpl.environment.handle_exception()
            out.append({"role": role, "content": content})
        return out
