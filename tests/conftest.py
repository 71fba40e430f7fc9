import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _rescue_dir(tmp_path_factory, monkeypatch):
    """Rescue journals (written when an output's own journal cannot be) stay inside the test's
    temp dirs, never in ~/.cache; subprocesses inherit the variable."""
    monkeypatch.setenv("CURATOR_RESCUE_DIR", str(tmp_path_factory.mktemp("rescue")))


def write_problems(path: Path, n: int = 6) -> Path:
    rows = [{"id": f"p{i}", "question": f"Tom has {i + 3} apples and buys {i + 2} more. How many now?", "answer": f"#### {2 * i + 5}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_manifest(tmp: Path, base_url: str, *, n: int = 2, problems: int = 6, out: str = "out", extra_teacher: str = "",
                   params: str = "", limits: str = "", budget: str = "", filters: str | None = None, model: str = "deepseek-reasoner",
                   api_key_env: str | None = None, name: str = "m.yaml") -> Path:
    data = tmp / "problems.jsonl"
    if not data.exists():
        write_problems(data, problems)
    text = f"""
name: test-run
source: {{path: problems.jsonl, id: id, problem: question, answer: answer}}
prompt: {{user: "{{{{ question }}}}\\nPut your final answer within \\\\boxed{{}}."}}
teacher:
  base_url: {base_url}
  model: {model}
  {f'api_key_env: {api_key_env}' if api_key_env else ''}
  params: {{temperature: 0.6, max_tokens: 2048, n: {n}{params}}}
  price: {{input: 0.55, cached_input: 0.14, output: 2.19}}
  {extra_teacher}
limits: {{concurrency: 16, timeout_s: 10, max_retries: 4, max_backoff_s: 0.5{limits}}}
output: {out}
{f'budget: {{{budget}}}' if budget else ''}
{f'filters: {filters}' if filters else ''}
"""
    p = tmp / name
    p.write_text(text)
    return p


def cli(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "curator", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)


@pytest.fixture
def server():
    """Start a local teacher with a given config; yields a factory returning the base URL."""
    from curator.teacher.config import ServerConfig
    from curator.teacher.runner import running_server

    stack = []

    def start(**cfg) -> str:
        cm = running_server(ServerConfig.load(cfg))
        url = cm.__enter__()
        stack.append(cm)
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes (raylets) on this machine: a head and a worker node, small object
    stores (tests/test_ray_chain.py, tests/test_ray_workers.py; one per module)."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 100 << 20})
    c.add_node(num_cpus=2, object_store_memory=100 << 20)
    c.wait_for_nodes()
    yield c
    c.shutdown()
