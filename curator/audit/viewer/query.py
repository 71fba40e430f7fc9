"""What a table request asks for: its filters, search, sort and page, read from the URL's
parameters and turned into a WHERE clause with bound parameters (sort columns from a whitelist:
nothing from a request reaches the SQL text)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curator.errors import RunError


class ViewerError(RunError):
    """An expected failure the CLI prints as one line (a bad output folder, a bad request)."""

PAGE_MAX = 200
# Text columns read when a sample is opened (never kept in the snapshot).
TEXT_COLUMNS = ["key", "problem", "gold", "cot", "completion", "raw_content", "messages_json", "row_json", "params_json",
                "request_id", "endpoint"]
SEARCH_FIELDS = ("problem", "cot", "completion")
# Sort keys the table offers: URL name -> SQL column (a whitelist: nothing from a request reaches the SQL text).
SORTS = {
    "seq": "seq",
    "cot_chars": "cot_chars",
    "completion_chars": "completion_chars",
    "completion_tokens": "completion_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "cost": "cost_usd",
    "latency": "latency_s",
    "attempts": "attempts",
}
LENGTH_COLUMNS = {"cot_chars", "completion_chars", "completion_tokens", "reasoning_tokens"}


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass
class Query:
    """The table's filters, parsed from a request (every value is bound as a parameter)."""

    status: str = ""  # "" | accepted | rejected | pending
    reason: str = ""  # "<filter>:<reason>" as in samples.reject_reason
    step: str = ""  # the filter that rejected first
    failed: str = ""  # a filter that rejected it, first or not (a duplicate is often also wrong)
    prompt_id: str = ""
    source: str = ""
    model: str = ""
    length_col: str = "cot_chars"
    min_len: float | None = None
    max_len: float | None = None
    usage_estimated: str = ""  # "" | yes | no
    q: str = ""  # text searched in problem / CoT / completion
    fields: tuple[str, ...] = SEARCH_FIELDS
    sort: str = "seq"
    desc: bool = False
    offset: int = 0
    limit: int = 50

    @classmethod
    def from_params(cls, p: dict[str, str]) -> Query:
        def num(name: str) -> float | None:
            v = (p.get(name) or "").strip()
            if not v:
                return None
            try:
                return float(v)
            except ValueError:
                raise ViewerError(f"{name}: not a number: {v[:40]!r}") from None

        def integer(name: str, default: int) -> int:
            v = num(name)
            return default if v is None else int(v)

        fields = tuple(f for f in (p.get("fields") or ",".join(SEARCH_FIELDS)).split(",") if f in SEARCH_FIELDS) or SEARCH_FIELDS
        length_col = p.get("length_col") or "cot_chars"
        if length_col not in LENGTH_COLUMNS:
            raise ViewerError(f"length_col: one of {', '.join(sorted(LENGTH_COLUMNS))}")
        sort = p.get("sort") or "seq"
        if sort not in SORTS:
            raise ViewerError(f"sort: one of {', '.join(SORTS)}")
        return cls(
            status=p.get("status", ""), reason=p.get("reason", ""), step=p.get("step", ""), failed=p.get("failed", ""), prompt_id=p.get("prompt_id", ""),
            source=p.get("source", ""), model=p.get("model", ""), length_col=length_col, min_len=num("min_len"),
            max_len=num("max_len"), usage_estimated=p.get("usage_estimated", ""), q=(p.get("q") or "").strip(), fields=fields,
            sort=sort, desc=p.get("desc") in ("1", "true"), offset=max(0, integer("offset", 0)),
            limit=min(PAGE_MAX, max(1, integer("limit", 50))),
        )

    def where(self) -> tuple[str, list[Any]]:
        conds, params = ["true"], []
        if self.status == "accepted":
            conds.append("accepted")
        elif self.status == "rejected":
            conds.append("accepted = false")
        elif self.status == "pending":
            conds.append("accepted IS NULL")
        for col, val in (("reject_reason", self.reason), ("reject_step", self.step), ("prompt_id", self.prompt_id),
                         ("source", self.source), ("model", self.model)):
            if val:
                conds.append(f"{col} = ?")
                params.append(val)
        if self.failed:
            conds.append("sid IN (SELECT sid FROM ver WHERE filter = ? AND NOT passed)")
            params.append(self.failed)
        if self.min_len is not None:
            conds.append(f"{self.length_col} >= ?")
            params.append(self.min_len)
        if self.max_len is not None:
            conds.append(f"{self.length_col} <= ?")
            params.append(self.max_len)
        if self.usage_estimated in ("yes", "no"):
            conds.append("usage_estimated" if self.usage_estimated == "yes" else "usage_estimated IS NOT TRUE")
        return " AND ".join(conds), params
