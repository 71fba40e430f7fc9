"""`curator serve --config FILE`: the config's relative paths resolve against FILE's folder (as a
manifest's do), whatever the current folder; a path that cannot be used is one line naming the
config, the field and the path, never a traceback. Every path field a server config has is covered
(PATH_FIELDS; a new path field must be added there, and so is tested here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import write_problems

from curator.teacher.config import PATH_FIELDS, ServerConfig

ROOT = Path(__file__).resolve().parents[1]


def serve(config: Path, cwd: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "curator", "serve", "--config", str(config), "--port", "0", *extra],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert r.returncode == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return lines[0]


def test_path_fields_are_the_configs_str_paths():
    """PATH_FIELDS names fields of the config (a renamed field would leave it checking nothing)."""
    assert set(PATH_FIELDS) <= set(ServerConfig.model_fields)
    assert {"problems", "request_log"} <= set(PATH_FIELDS)


# field -> (a value that cannot be used, written in the config relative to its folder)
BAD = {
    "problems": "data/missing.jsonl",
    "request_log": "a-file/log.jsonl",  # its folder would have to be inside a regular file
}


@pytest.mark.parametrize("field", PATH_FIELDS)
def test_unusable_path_is_one_line_naming_config_field_and_path(tmp_path, field):
    assert field in BAD, f"new path field {field}: add an unusable value to BAD"
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "a-file").write_text("x")
    config = conf_dir / "server.yaml"
    config.write_text(f"{field}: {BAD[field]}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    line = one_line_error(serve(config, elsewhere))
    resolved = str((conf_dir / BAD[field]).resolve())
    assert str(config) in line and field in line and resolved in line, line


def test_missing_problems_given_on_the_command_line(tmp_path):
    config = tmp_path / "server.yaml"
    config.write_text("latency_ms: 1\n")
    line = one_line_error(serve(config, tmp_path, "--problems", "nope.jsonl"))
    assert "--problems" in line and "nope.jsonl" in line, line


def test_unreadable_problems_file_is_one_line(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"question": 1}\n')
    config = tmp_path / "server.yaml"
    config.write_text("problems: p.jsonl\nproblem_column: question\n")
    line = one_line_error(serve(config, ROOT))
    assert str(tmp_path / "p.jsonl") in line and "question" in line, line


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    """Started from another folder, the server finds its problems and writes its request log next to
    the config, as the README's `curator serve --config manifests/demo-server.yaml` from the root."""
    conf_dir = tmp_path / "conf"
    (conf_dir / "data").mkdir(parents=True)
    write_problems(conf_dir / "data" / "p.jsonl", n=5)
    config = conf_dir / "server.yaml"
    config.write_text("problems: data/p.jsonl\nproblem_column: question\nrequest_log: logs/requests.jsonl\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "curator", "serve", "--config", str(config), "--port", "0"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on http://" in line, line + (proc.stdout.read() if proc.poll() is not None else "")
        base = line.split("listening on ", 1)[1].strip()
        with urllib.request.urlopen(base.rsplit("/v1", 1)[0] + "/stats", timeout=10) as r:
            stats = json.load(r)
        assert stats["problems"] == 5, stats
        question = "Tom has 3 apples and buys 2 more. How many now?"
        body = json.dumps({"model": "teacher", "messages": [{"role": "user", "content": question}]})
        req = urllib.request.Request(base + "/chat/completions", data=body.encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        log = conf_dir / "logs" / "requests.jsonl"
        for _ in range(50):
            if log.exists() and log.read_text().strip():
                break
            time.sleep(0.1)
        assert log.exists() and log.read_text().strip(), "request log not next to the config"
        assert not (cwd / "logs").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_readme_serve_command_from_the_repository_root():
    """The README's line, from the root: the demo server's problems are found."""
    cfg = ServerConfig.from_yaml(ROOT / "manifests" / "demo-server.yaml")
    assert cfg.problems and Path(cfg.problems).is_file()
    assert Path(cfg.problems) == (ROOT / "data" / "demo-math.jsonl").resolve()
