"""The export folder (issue 17): export never overwrites or deletes a file it did not write.
A folder holding an earlier export plus the user's own files is refused in one line and left
byte-identical; an earlier export alone is replaced file by file (its manifest lists them);
`--to .` works in an empty folder and is one line in a busy one. Real run, real CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cli, write_manifest, write_problems
from curator.config import load_manifest
from curator.run import run_manifest
from curator.teacher.runner import running_server


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export-folder")
    write_problems(tmp / "problems.jsonl", 6)
    with running_server({"problems": str(tmp / "problems.jsonl"), "problem_column": "question"}) as url:
        res = run_manifest(load_manifest(write_manifest(tmp, url, n=2, problems=6, filters="{name: fmt, steps: [format]}")), progress=False)
    assert res.complete
    return tmp / "out"


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def one_line(r: subprocess.CompletedProcess, message: str) -> None:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr


def export_cli(out: Path, *args, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curator", "export", str(out), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_users_files_beside_an_earlier_export_survive_byte_identical(out, tmp_path):
    d = tmp_path / "sft"
    r = cli("export", out, "--format", "messages", "--to", d)
    assert r.returncode == 0, r.stderr
    # The user keeps their own things next to the data: a training script, notes in a subfolder.
    (d / "train.sh").write_bytes(b"#!/bin/sh\naccelerate launch sft.py\n")
    (d / "notes").mkdir()
    (d / "notes" / "run1.md").write_bytes("loss went down \u2713\n".encode())
    before = snapshot(d)
    for fmt in ("messages", "hf"):
        r = cli("export", out, "--format", fmt, "--to", d)
        one_line(r, "is not a curator export's file")
        assert "notes/run1.md" in r.stderr or "train.sh" in r.stderr
        assert snapshot(d) == before  # nothing deleted, nothing overwritten, the earlier export too


def test_an_edited_file_of_the_export_is_the_users_now(out, tmp_path):
    d = tmp_path / "sft"
    assert cli("export", out, "--format", "messages", "--to", d).returncode == 0
    (d / "README.md").write_text("# my own card\n")
    before = snapshot(d)
    one_line(cli("export", out, "--format", "messages", "--to", d), "changed since curator exported it")
    assert snapshot(d) == before


def test_an_earlier_export_alone_is_replaced_file_by_file(out, tmp_path):
    d = tmp_path / "sft"
    assert cli("export", out, "--format", "hf", "--to", d, "--test-size", "1").returncode == 0
    assert (d / "arrow").is_dir() and (d / "data" / "test-00000-of-00001.parquet").is_file()
    r = cli("export", out, "--format", "messages", "--to", d, "--test-size", "0")
    assert r.returncode == 0, r.stderr
    files = set(snapshot(d))
    manifest = json.loads((d / "export.json").read_text())
    # Only the new export's files remain (the hf files, folders included, are gone), each listed with its hash.
    assert files == set(manifest["written"]) | {"export.json"} == {"train.jsonl", "README.md", "dataset_info.json", "axolotl.yaml", "export.json"}
    assert not (d / "data").exists() and not (d / "arrow").exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_manifest_naming_files_outside_is_refused(out, tmp_path):
    d = tmp_path / "sft"
    assert cli("export", out, "--format", "messages", "--to", d).returncode == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    m = json.loads((d / "export.json").read_text())
    m["written"]["../victim.txt"] = None
    (d / "export.json").write_text(json.dumps(m))
    one_line(cli("export", out, "--format", "alpaca", "--to", d), "not a file of this folder")
    assert victim.read_text() == "keep me" and (d / "train.jsonl").exists()


def test_to_dot(out, tmp_path):
    empty = tmp_path / "here"
    empty.mkdir()
    r = export_cli(out.resolve(), "--format", "messages", "--to", ".", cwd=empty)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (empty / "train.jsonl").is_file() and (empty / "export.json").is_file()
    r = export_cli(out.resolve(), "--format", "sharegpt", "--to", ".", cwd=empty)  # replaces its own files
    assert r.returncode == 0, r.stderr
    busy = tmp_path / "project"
    busy.mkdir()
    (busy / "paper.tex").write_text("\\section{Intro}")
    one_line(export_cli(out.resolve(), "--format", "messages", "--to", ".", cwd=busy), "paper.tex is not a curator export's file")
    assert [p.name for p in busy.iterdir()] == ["paper.tex"] and (busy / "paper.tex").read_text() == "\\section{Intro}"


def test_a_symlinked_folder_listed_by_a_hostile_manifest_is_not_written_through(out, tmp_path):
    """A received export folder whose manifest lists `arrow` (trusted by name) while `arrow` is a
    symlink to another folder: exporting hf into it must not write into (or over) that folder."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "dataset_dict.json").write_text("the user's own\n")
    d = tmp_path / "received"
    d.mkdir()
    (d / "arrow").symlink_to(victim, target_is_directory=True)
    (d / "export.json").write_text(json.dumps({"curator_export": 1, "format": "hf", "written": {"arrow": None}}))
    before = snapshot(victim)
    r = cli("export", out, "--format", "hf", "--to", d)
    one_line(r, "changed since curator exported it")
    assert snapshot(victim) == before and (d / "arrow").is_symlink()
