"""Secrets and hostile inputs (issue 17): credentials in URLs, `{env: NAME}` headers and extra_body,
literal keys, key-shaped strings in exported rows, sandboxed templates, size limits, null and
missing template columns. Real runs through the CLI against the local teacher; every refusal is
one line and happens before anything is sent."""

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import cli, write_manifest

GW_KEY = "gwkey-7Q2mZr9XbT4kLp8VnW3s"
GW_TOKEN = "gwtok-Hs83JdkQ02mxPz7YtR5v"
HF_SHAPED = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345"


def chat_requests(base_url: str) -> int:
    return json.loads(urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/stats").read())["requests"]


def one_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    return lines[0]


def files_holding(root: Path, *secrets: str) -> list[str]:
    """Files under root whose bytes (Parquet: whose decoded rows) hold any of the secrets."""
    hits = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.suffix == ".parquet":
            data = json.dumps(pq.read_table(p).to_pylist(), default=str).encode()
        if any(s.encode() in data for s in secrets):
            hits.append(str(p))
    return hits


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- 1. credentials in URLs

@pytest.mark.parametrize("where", ["base_url", "replicas"])
def test_credentials_in_a_url_are_refused_and_never_written(tmp_path, server, where):
    url = server()
    secret_url = url.replace("http://", "http://alice:hunter2-pass@")
    extra = f"replicas: [{secret_url}]" if where == "replicas" else ""
    m = write_manifest(tmp_path, secret_url if where == "base_url" else url, extra_teacher=extra)
    r = cli("run", m, "--no-progress")
    line = one_line(r)
    assert "credentials" in line and "environment variable" in line, line
    assert "hunter2" not in r.stderr + r.stdout
    assert chat_requests(url) == 0
    assert not (tmp_path / "out").exists() or not files_holding(tmp_path / "out", "hunter2")


# ---------------------------------------------------------------- 2. {env: NAME} headers and extra_body

def _gateway_manifest(tmp_path: Path, url: str, *, filters: str | None = "[format]") -> Path:
    return write_manifest(tmp_path, url, filters=filters, extra_teacher="headers: {X-Gateway-Key: {env: CURATOR_TEST_GW_KEY}, X-Title: curator-tests}",
                          params=", extra_body: {gateway_token: {env: CURATOR_TEST_GW_TOKEN}}")


def test_env_headers_and_extra_body_are_sent_and_never_written(tmp_path, server):
    url = server(require_headers={"X-Gateway-Key": GW_KEY}, require_body={"gateway_token": GW_TOKEN})
    m = _gateway_manifest(tmp_path, url)
    env = {"CURATOR_TEST_GW_KEY": GW_KEY, "CURATOR_TEST_GW_TOKEN": GW_TOKEN}
    r = cli("run", m, "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    assert "stored 12 new samples" in r.stderr and chat_requests(url) == 6  # the gateway took both credentials
    out = tmp_path / "out"
    resolved = yaml.safe_load((out / "manifest.resolved.yaml").read_text())
    assert resolved["teacher"]["headers"]["X-Gateway-Key"] == {"env": "CURATOR_TEST_GW_KEY"}
    assert resolved["teacher"]["params"]["extra_body"] == {"gateway_token": {"env": "CURATOR_TEST_GW_TOKEN"}}
    for fmt in ("messages", "hf"):
        assert cli("export", out, "--format", fmt, "--to", tmp_path / f"export-{fmt}").returncode == 0
    assert "CURATOR_TEST_GW_TOKEN" in (tmp_path / "export-messages" / "README.md").read_text()  # named, not read
    # resume reads the names back from manifest.resolved.yaml and resolves them again
    (out / "manifest.resolved.yaml").write_text((out / "manifest.resolved.yaml").read_text().replace("n: 2", "n: 3"))
    r = cli("resume", out, "--no-progress", env=env)
    assert r.returncode == 0 and "stored 6 new samples" in r.stderr, r.stderr
    assert files_holding(tmp_path, GW_KEY, GW_TOKEN) == []


def test_missing_env_variable_is_one_line_naming_it(tmp_path, server):
    url = server(require_headers={"X-Gateway-Key": GW_KEY}, require_body={"gateway_token": GW_TOKEN})
    m = _gateway_manifest(tmp_path, url)
    line = one_line(cli("run", m, "--no-progress", env={"CURATOR_TEST_GW_KEY": GW_KEY, "CURATOR_TEST_GW_TOKEN": ""}))
    assert "CURATOR_TEST_GW_TOKEN" in line and "teacher.params.extra_body.gateway_token" in line and "not set" in line, line
    assert chat_requests(url) == 0


@pytest.mark.parametrize("where", ["api_key_env", "header"])
def test_a_key_with_a_line_break_is_one_line_naming_its_variable(tmp_path, server, where):
    """A key exported with its trailing newline (`export K="$(cat keyfile)"` keeps none, a
    copy-paste often does) cannot go in an HTTP header: say so, not 'cannot reach the teacher'."""
    url = server()
    teacher = "api_key_env: CURATOR_TEST_NL" if where == "api_key_env" else "headers: {X-Gateway-Key: {env: CURATOR_TEST_NL}}"
    m = write_manifest(tmp_path, url, extra_teacher=teacher)
    line = one_line(cli("run", m, "--no-progress", env={"CURATOR_TEST_NL": "gw-4f1e9a7c\n"}))
    assert "CURATOR_TEST_NL" in line and "line break" in line and "reach" not in line and "gw-4f1e9a7c" not in line, line
    assert chat_requests(url) == 0


def test_env_outside_extra_body_is_refused_not_sent_as_is(tmp_path, server):
    """`{env: NAME}` is read in teacher.headers and params.extra_body only: elsewhere in params it
    was sent to the teacher as the literal object {"env": NAME}, with no word."""
    url = server()
    m = write_manifest(tmp_path, url, params=", metadata: {user: {env: CURATOR_TEST_U}}")
    line = one_line(cli("run", m, "--no-progress", env={"CURATOR_TEST_U": "bob"}))
    assert "teacher.params.metadata" in line and "extra_body" in line, line
    assert chat_requests(url) == 0


@pytest.mark.parametrize("teacher, params, field", [
    ("", ", extra_body: {token: sk-proj-4f9aQ7bX2mLk8sVt0pRz}", "teacher.params.extra_body.token"),
    ("", ", extra_body: {auth: {key: 9f86d081884c7d659a2feaa0c55ad015}}", "teacher.params.extra_body.auth.key"),
    ("headers: {Authorization: Bearer abcdefghijklmnopqrstuvwx}", "", "teacher.headers.Authorization"),
    ("headers: {X-Api-Key: short}", "", "teacher.headers.X-Api-Key"),
])
def test_a_literal_key_is_refused_naming_its_field(tmp_path, server, teacher, params, field):
    url = server()
    m = write_manifest(tmp_path, url, extra_teacher=teacher, params=params)
    r = cli("run", m, "--no-progress")
    line = one_line(r)
    assert field in line and "{env:" in line, line
    secret = (params or teacher).split(": ")[-1].rstrip("}")
    assert secret not in line
    assert chat_requests(url) == 0


def test_ordinary_params_and_headers_are_not_taken_for_keys(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, extra_teacher="headers: {X-Title: my-app, HTTP-Referer: 'https://github.com/someone/some-long-repository-name'}",
                       params=", extra_body: {models: [deepseek/deepseek-r1-0528-qwen3-8b], provider: {order: [DeepInfra]}}")
    r = cli("run", m, "--no-progress")
    assert r.returncode == 0, r.stderr


def test_batch_files_never_carry_an_env_value(tmp_path, server):
    """Batch request files are written to disk: `{env:}` in extra_body is refused there, in one line."""
    url = server()
    m = _gateway_manifest(tmp_path, url, filters=None)
    env = {"CURATOR_TEST_GW_KEY": GW_KEY, "CURATOR_TEST_GW_TOKEN": GW_TOKEN}
    line = one_line(cli("batch", "write", m, "--to", tmp_path / "requests.jsonl", env=env))
    assert "extra_body" in line and "{env: ...}" in line and not (tmp_path / "requests.jsonl").exists(), line
    m.write_text(m.read_text().replace("teacher:\n", "teacher:\n  mode: batch\n"))
    line = one_line(cli("run", m, "--no-progress", env=env))
    assert "teacher.params.extra_body" in line and "mode: batch" in line, line
    assert chat_requests(url) == 0 and files_holding(tmp_path, GW_KEY, GW_TOKEN) == []


# ---------------------------------------------------------------- 3. key-shaped strings in exported rows

class _Recorder(BaseHTTPRequestHandler):
    hits: list = []

    def _any(self):
        type(self).hits.append(self.path)
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Invalid credentials"}')

    do_GET = do_POST = do_PUT = do_HEAD = _any

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_hub():
    _Recorder.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Recorder.hits
    httpd.shutdown()


def test_export_warns_about_key_shaped_text_and_push_refuses_without_allow_secrets(tmp_path, server, fake_hub):
    rows = [{"id": f"p{i}", "question": f"Tom has {i + 3} apples and buys {i + 2} more. How many now?", "answer": f"#### {2 * i + 5}"} for i in range(6)]
    rows[2]["question"] = f"My token is {HF_SHAPED}, why does the API refuse it? Also what is 2+3?"
    write_rows(tmp_path / "problems.jsonl", rows)
    url = server()
    m = write_manifest(tmp_path, url, filters="[format]")
    assert cli("run", m, "--no-progress").returncode == 0
    r = cli("export", tmp_path / "out", "--to", tmp_path / "exp")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "key-shaped" in r.stderr and "hf_" in r.stderr, r.stderr
    assert "problem: 2" in r.stderr and "prompt: 2" in r.stderr and "row.question: 2" in r.stderr, r.stderr  # n=2 samples of the prompt
    assert HF_SHAPED not in r.stderr + r.stdout

    hub, hits = fake_hub
    env = {"HF_ENDPOINT": hub, "HF_TOKEN": "hf_" + "Z" * 34, "HF_HUB_DISABLE_TELEMETRY": "1"}
    r = cli("export", tmp_path / "out", "--format", "hf", "--to", tmp_path / "exp-hf", "--push-to-hub", "someone/ds", env=env)
    assert r.returncode == 4, r.stderr
    assert "not pushing to someone/ds" in r.stderr and "--allow-secrets" in r.stderr, r.stderr
    assert HF_SHAPED not in r.stderr and hits == []  # refused before any call to the Hub
    assert (tmp_path / "exp-hf" / "export.json").exists()  # the local export is complete

    # With --allow-secrets the push goes ahead (to a hub that refuses the token).
    r = cli("export", tmp_path / "out", "--format", "hf", "--to", tmp_path / "exp-hf", "--push-to-hub", "someone/ds", "--allow-secrets", env=env)
    assert r.returncode == 4 and "not pushing" not in r.stderr, r.stderr
    assert hits, "the push with --allow-secrets should have reached the hub"


def test_clean_export_has_no_warning(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url, filters="[format]")
    assert cli("run", m, "--no-progress").returncode == 0
    r = cli("export", tmp_path / "out", "--to", tmp_path / "exp")
    assert r.returncode == 0 and "key-shaped" not in r.stderr, r.stderr


# ---------------------------------------------------------------- 4. sandboxed templates

ESCAPE = "{{{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}}}{{{{ question }}}}"


def test_template_escape_is_refused_before_anything_is_sent(tmp_path, server):
    url = server()
    marker = tmp_path / "pwned"
    m = write_manifest(tmp_path, url)
    m.write_text(m.read_text().replace('prompt: {user: "{{ question }}', 'prompt: {user: "' + ESCAPE.format(marker=marker)))
    line = one_line(cli("run", m, "--no-progress"))
    assert str(m) in line and "unsafe" in line and "sandbox" in line, line
    assert not marker.exists() and chat_requests(url) == 0


def test_resume_of_a_received_folder_renders_its_template_sandboxed(tmp_path, server):
    url = server()
    m = write_manifest(tmp_path, url)
    assert cli("run", m, "--no-progress").returncode == 0
    sent = chat_requests(url)
    # Someone hands us their output folder: its resolved manifest carries a hostile template.
    resolved = tmp_path / "out" / "manifest.resolved.yaml"
    data = yaml.safe_load(resolved.read_text())
    marker = tmp_path / "pwned"
    data["prompt"]["user"] = ESCAPE.format(marker=marker)
    data["teacher"]["params"]["n"] = 3  # something left to buy
    resolved.write_text(yaml.safe_dump(data))
    line = one_line(cli("resume", tmp_path / "out", "--no-progress"))
    assert "manifest.resolved.yaml" in line and "unsafe" in line, line
    assert not marker.exists() and chat_requests(url) == sent


# ---------------------------------------------------------------- 5. size limits

def test_a_50_mb_problem_is_refused_naming_file_row_and_column(tmp_path, server):
    rows = [{"id": f"p{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]
    rows[3]["question"] = "x" * (50 << 20)
    data = write_rows(tmp_path / "problems.jsonl", rows)
    url = server()
    m = write_manifest(tmp_path, url)
    line = one_line(cli("run", m, "--no-progress"))
    assert f"{data}: row 4 (id 'p3')" in line and "'question'" in line and "limits.max_problem_bytes" in line, line
    assert chat_requests(url) == 0 and not (tmp_path / "out" / "manifest.resolved.yaml").exists()


def test_rendered_prompt_limit_is_configurable(tmp_path, server):
    rows = [{"id": f"p{i}", "question": f"What is {i} + 1?", "context": "c" * (10 if i != 2 else 3000), "answer": str(i + 1)} for i in range(5)]
    data = write_rows(tmp_path / "problems.jsonl", rows)
    url = server()
    m = write_manifest(tmp_path, url, limits=", max_prompt_bytes: 2000")
    m.write_text(m.read_text().replace('prompt: {user: "{{ question }}', 'prompt: {user: "{{ context }} {{ question }}'))
    line = one_line(cli("run", m, "--no-progress"))
    assert f"{data}: row 3 (id 'p2')" in line and "rendered prompt is 3,0" in line and "limits.max_prompt_bytes (2,000)" in line, line
    assert chat_requests(url) == 0
    m.write_text(m.read_text().replace("max_prompt_bytes: 2000", "max_prompt_bytes: 4000"))
    assert cli("run", m, "--no-progress").returncode == 0


# ---------------------------------------------------------------- 6. null or missing template columns

@pytest.mark.parametrize("case", ["missing", "null"])
def test_null_or_missing_column_is_one_line_before_anything_is_sent(tmp_path, server, case):
    rows = [{"id": f"p{i}", "question": f"What is {i} + 1?", "hint": f"add {i}", "answer": str(i + 1)} for i in range(6)]
    if case == "missing":
        del rows[4]["hint"]
    else:
        rows[4]["hint"] = None
    data = write_rows(tmp_path / "problems.jsonl", rows)
    url = server()
    m = write_manifest(tmp_path, url)
    m.write_text(m.read_text().replace('prompt: {user: "{{ question }}', 'prompt: {user: "{{ question }} Hint: {{ hint }}.'))
    line = one_line(cli("run", m, "--no-progress"))
    assert f"{data}: row 5 (id 'p4')" in line and f"column 'hint' is {case}" in line and "nothing was sent" in line, line
    assert chat_requests(url) == 0 and not (tmp_path / "out").exists()


def _every_file(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", ["null", "oversized"])
def test_a_refused_run_creates_no_folder_and_changes_no_existing_one(tmp_path, server, case):
    """The row checks run before OUT is created or opened: refused on a new OUT, no folder is left
    behind; on an existing OUT, not one byte of it changes (its lock file included)."""
    good = [{"id": f"p{i}", "question": f"What is {i} + 1?", "hint": f"add {i}", "answer": str(i + 1)} for i in range(6)]
    bad = [dict(r) for r in good]
    if case == "null":
        bad[4]["hint"] = None
    else:
        bad[4]["question"] = "x" * 5000
    data = write_rows(tmp_path / "problems.jsonl", bad)
    url = server()
    m = write_manifest(tmp_path, url, limits=", max_problem_bytes: 2000")
    m.write_text(m.read_text().replace('prompt: {user: "{{ question }}', 'prompt: {user: "{{ question }} Hint: {{ hint }}.'))
    out = tmp_path / "out"
    line = one_line(cli("run", m, "--no-progress"))
    assert f"{data}: row 5 (id 'p4')" in line, line
    assert not out.exists() and chat_requests(url) == 0
    write_rows(data, good)
    assert cli("run", m, "--no-progress").returncode == 0
    before = _every_file(out)
    assert ".lock" in before and "manifest.resolved.yaml" in before
    write_rows(data, bad)
    for args in (("run", m, "--no-progress"), ("resume", out, "--no-progress")):
        line = one_line(cli(*args))
        assert f"{data}: row 5 (id 'p4')" in line, line
        assert _every_file(out) == before, args


def test_a_template_may_guard_an_optional_column(tmp_path, server):
    rows = [{"id": f"p{i}", "question": f"What is {i} + 1?", "hint": f"add {i}", "answer": str(i + 1)} for i in range(6)]
    rows[1]["hint"] = None
    del rows[4]["hint"]
    write_rows(tmp_path / "problems.jsonl", rows)
    url = server()
    m = write_manifest(tmp_path, url)
    m.write_text(m.read_text().replace('prompt: {user: "{{ question }}', 'prompt: {user: "{{ question }}{% if hint %} Hint: {{ hint }}.{% endif %}'))
    r = cli("run", m, "--no-progress")
    assert r.returncode == 0, r.stderr
    from curator.store import catalog

    con = catalog.connect(tmp_path / "out", read_only=True)
    try:
        prompts = [row[0] for row in con.sql("SELECT DISTINCT messages_json FROM samples").fetchall()]
    finally:
        con.close()
    assert len(prompts) == 6 and not any("None" in p for p in prompts)
    assert sum("Hint:" in p for p in prompts) == 4
