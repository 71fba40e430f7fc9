"""`python -m curator.server [--config file.yaml] [--config-json '{...}'] [--port 8000] [--latency-ms 200] ...`"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .config import COT_PLACEMENTS, ServerConfig
from .runner import serve


def _weights(text: str) -> dict[str, float]:
    """`right=0.8,wrong=0.2` or a JSON object."""
    text = text.strip()
    if text.startswith("{"):
        return {str(k): float(v) for k, v in json.loads(text).items()}
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, _, v = part.partition("=")
        out[k.strip()] = float(v) if v else 1.0
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m curator.server", description="Local OpenAI-compatible teacher server")
    p.add_argument("--config", help="YAML file with ServerConfig fields")
    p.add_argument("--config-json", help="ServerConfig as a JSON object (applied after --config)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--models", help="comma-separated model names")
    p.add_argument("--api-key")
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--jitter-ms", type=float)
    p.add_argument("--cot-placement", choices=COT_PLACEMENTS)
    p.add_argument("--cot-words", type=int)
    p.add_argument("--mix", type=_weights, help="outcome weights, e.g. right=0.8,wrong=0.2")
    p.add_argument("--problems", help="JSONL/Parquet/CSV problem file used to look up gold answers")
    p.add_argument("--id-column")
    p.add_argument("--problem-column")
    p.add_argument("--answer-column")
    p.add_argument("--seed", type=int)
    p.add_argument("--n-mode", choices=("support", "ignore", "reject"))
    p.add_argument("--cached-fraction", type=float)
    p.add_argument("--fault-rate", type=_weights, help="fault probabilities, e.g. 429=0.05,500=0.01")
    p.add_argument("--fail-first", type=_weights, help="first-k failures per request body, e.g. 429=1")
    p.add_argument("--retry-after-s", type=float)
    p.add_argument("--hang-s", type=float)
    p.add_argument("--collapse-after", type=int)
    p.add_argument("--tokens-per-word", type=float)
    p.add_argument("--request-log", help="JSONL file: one line per chat request (curator/server/reqlog.py)")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    data: dict[str, Any] = {}
    if args.config:
        data.update(ServerConfig.from_yaml(args.config).model_dump(exclude_unset=True))
    if args.config_json:
        data.update(json.loads(args.config_json))
    skip = {"config", "config_json", "host", "port"}
    for k, v in vars(args).items():
        if k in skip or v is None:
            continue
        if k == "models":
            v = [m.strip() for m in v.split(",") if m.strip()]
        elif k == "fail_first":
            v = {kk: int(vv) for kk, vv in v.items()}
        data[k] = v
    return ServerConfig.model_validate(data)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    serve(config_from_args(args), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
