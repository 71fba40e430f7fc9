"""The stored sample: one row per (prompt, sample index), the same schema in journal, shards and views.

Every stage reads and writes these columns, so a stage can move to another engine later.
"""

from __future__ import annotations

import pyarrow as pa

# Column -> arrow type. JSON-valued columns are strings so every engine can read them.
SAMPLE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # sha256 of endpoint, model, messages, params, sample_index
        ("run", pa.string()),  # manifest name
        ("prompt_id", pa.string()),  # the source row's id
        ("sample_index", pa.int32()),
        ("source", pa.string()),  # source file / dataset path (for per-source breakdowns)
        ("problem", pa.string()),
        ("gold", pa.string()),  # may be null
        ("row_json", pa.string()),  # the whole source row (tests, choices, ...) as JSON
        ("messages_json", pa.string()),  # the rendered request messages as JSON
        ("cot", pa.string()),
        ("completion", pa.string()),
        ("cot_source", pa.string()),  # reasoning_content | reasoning | think | think_unopened | none
        ("raw_content", pa.string()),  # message.content as the server sent it
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("cached_tokens", pa.int64()),
        ("cost_usd", pa.float64()),  # null when the model's price is unknown
        ("usage_estimated", pa.bool_()),  # token counts (and so cost) counted locally: the server sent no usage
        ("model", pa.string()),  # the model the server says answered
        ("endpoint", pa.string()),
        ("params_json", pa.string()),  # sampling params as sent (minus n)
        ("request_id", pa.string()),  # server response id
        ("attempts", pa.int32()),  # HTTP attempts the request took
        ("latency_s", pa.float64()),
        ("created_at", pa.float64()),  # unix time the answer was stored
        ("seq", pa.int64()),  # order in which answers were stored in this output (drift signals)
        ("config_id", pa.string()),  # the run's configuration: endpoint, model, params, template (curator/sample/configs.py)
    ]
)

SAMPLE_COLUMNS = [f.name for f in SAMPLE_SCHEMA]

# Verdicts written by a filter chain: one row per (key, filter step).
VERDICT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("step", pa.int32()),  # position in the chain
        ("filter", pa.string()),  # filter name as written in the chain
        ("passed", pa.bool_()),
        ("reason", pa.string()),  # reason code when rejected, e.g. "wrong_answer"; null when passed
        ("details", pa.string()),  # JSON: extracted answer, language found, duplicate-of key, ...
    ]
)
