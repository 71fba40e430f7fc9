"""README.md is a contract: every command in its code blocks runs as written, from a fresh copy of
the repository root, and ends as documented (exit 0, or for a server: it answers) with no traceback.
A command added to the README later is picked up by the same rules, without touching this file.

Which lines are commands (blocks found with markdown-it, CommonMark's parser):
- a fenced block tagged bash, sh, shell, zsh, console or shell-session: every line is a command;
- a fenced block with any other tag (yaml, python, text, ...) is not;
- an indented block, or a fenced block without a tag, is a listing (file tree, table of files)
  when every line at the block's own indentation starts with a path: a word holding a `/` that is
  not something to run (`OUT/shards/*.parquet`, `manifests/gsm8k.yaml`, `curator/sample/`; lines
  indented deeper continue the line above). Any other such block is commands, every line of it.
In any block with `$ ` prompts only the prompted lines are commands (the rest is their output).
In a command, a trailing `\\` continues the line, `# ...` outside quotes is a comment, `a && b`
runs in one shell once its SETUP parts are dropped (a server, HEAVY or placeholder part is taken
alone, by its rule), and a trailing `&` ("on machine A, B, C") runs in the foreground, one after
the other (each worker finishes its part).

How a command runs: in README order, each from the root of one fresh copy of the repository (its
`git ls-files`), `python`, `python3`, `curator` and `.venv/bin/*` standing for this interpreter,
and then, by the first rule that matches:
- SETUP (creating a venv, pip, `.ci/run`, apt): skipped, each pattern listed with its reason;
- paid APIs: every manifest of the copy whose teacher needs a key or is not on this machine is
  pointed at one local teacher (a module-scoped `curator serve` process answering the models
  they name), and every `api_key_env` they name holds a dummy key; `test_key_not_set` runs each such manifest a README command names without its key,
  against the real API's URL: one line naming the variable, nothing sent;
- SERVERS (`curator serve`, `curator view`): started, must print their URL and answer HTTP on it,
  then stopped with SIGINT;
- HEAVY commands (benchmarks: minutes of both cores; `--engine ray`: a Ray cluster, covered by
  tests/test_ray_*.py) and commands with placeholders (an all-caps word such as OUT or HOST:PORT,
  `<...>`, or an `[optional]` part), which cannot run as written: their `--help` exits 0 and
  lists every option the command uses;
- anything else must exit 0 within COMMAND_TIMEOUT_S.
A README command that fits none of this fails with what to do.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from curator.teacher.runner import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND_TIMEOUT_S = 180
SERVER_TIMEOUT_S = 60
HELP_TIMEOUT_S = 60
SHELL_TAGS = {"bash", "sh", "shell", "zsh", "console", "shell-session", "shellsession"}

# A part of a command that matches is not run: (pattern on the part's text, why).
SETUP: tuple[tuple[str, str], ...] = (
    (r"^python3?\s+-m\s+venv\b", "creates a virtualenv: the test runs in the one already set up"),
    (r"^(\S*/)?pip3?\s+install\b|^python3?\s+-m\s+pip\s+install\b", "installs packages from the registry: .ci/run did, before the tests"),
    (r"(^|\s)(\S*/)?\.ci/run\b", "is CI itself: sets up .venv and runs the whole suite (13+ min), this test included"),
    (r"^(sudo\s+)?apt(-get)?\s", "installs system packages"),
)
# Started, checked to answer on the URL they print, stopped.
SERVERS: tuple[str, ...] = (r"^curator\s+serve\b", r"^curator\s+view\b")
# Checked against their --help: (pattern, why they are not run here).
HEAVY: tuple[tuple[str, str], ...] = (
    (r"^python3?\s+bench/", "a benchmark: minutes of both cores; it prints figures, not a verdict"),
    (r"--engine[\s=]+ray\b", "starts a Ray cluster; tests/test_ray_chain.py and test_ray_workers.py run that path"),
)
_PLACEHOLDER = re.compile(r"^(\[.*|[^[]*\]|<.*>|\.\.\.|[A-Z][A-Z0-9_]*(_[A-Z0-9]+)*([:./].*)?)$")


# ------------------------------------------------------------------ reading README.md


@dataclass
class Command:
    line: int  # README line of the command's first line
    text: str  # the command as it runs: continuations joined, comment and prompt removed
    parts: list[str] = field(default_factory=list)  # `a && b` -> [a, b]

    @property
    def id(self) -> str:
        return f"L{self.line}: {self.text}"


def _scan(text: str):
    """(index, char, quoted) over a shell line, so comments and && are found outside quotes only."""
    quote, escaped = "", False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
            yield i, ch, True
            continue
        if ch == "\\" and quote != "'":
            escaped = True
            yield i, ch, True
            continue
        if quote:
            if ch == quote:
                quote = ""
            yield i, ch, True
            continue
        if ch in "'\"":
            quote = ch
        yield i, ch, bool(quote)


def strip_comment(text: str) -> str:
    for i, ch, quoted in _scan(text):
        if ch == "#" and not quoted and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def split_and(text: str) -> list[str]:
    parts, start = [], 0
    for i, ch, quoted in _scan(text):
        if ch == "&" and not quoted and text[i + 1 : i + 2] == "&":
            parts.append(text[start:i].strip())
            start = i + 2
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _runnable(word: str) -> bool:
    return word.startswith(("./", ".venv/", "/", "~")) or (ROOT / word).is_file() and os.access(ROOT / word, os.X_OK)


def _is_listing(lines: list[str]) -> bool:
    real = [ln for ln in lines if ln.strip()]
    base = min(len(ln) - len(ln.lstrip()) for ln in real)
    for ln in real:
        if len(ln) - len(ln.lstrip()) > base:
            continue  # continues the entry above
        word = ln.split()[0]
        if "/" not in word or word.startswith("$") or _runnable(word):
            return False
    return True


def _block_commands(lines: list[str], first_line: int) -> list[Command]:
    prompted = any(ln.lstrip().startswith("$ ") for ln in lines)
    out: list[Command] = []
    pending, start = "", 0
    for k, raw in enumerate(lines):
        ln = raw.strip()
        if not pending:
            if prompted:
                if not ln.startswith("$ "):
                    continue  # output shown after a prompt
                ln = ln[2:]
            if not ln or ln.startswith("#"):
                continue
            start = first_line + k
        ln = strip_comment(ln) if not ln.endswith("\\") else ln
        if ln.endswith("\\"):
            pending += ln[:-1].strip() + " "
            continue
        text = strip_comment(pending + ln).strip()
        pending = ""
        if text:
            out.append(Command(start, text, split_and(text)))
    return out


def readme_commands(text: str) -> list[Command]:
    """Every command of the README's code blocks, in order (see the module's docstring)."""
    commands: list[Command] = []
    for tok in MarkdownIt("commonmark").parse(text):
        if tok.type not in ("fence", "code_block") or not tok.map:
            continue
        first = tok.map[0] + 1 + (1 if tok.type == "fence" else 0)  # 1-based; a fence's content starts after ```
        lines = tok.content.rstrip("\n").split("\n")
        tag = tok.info.split()[0].lower() if tok.info.strip() else ""
        if tag and tag not in SHELL_TAGS:
            continue
        if not tag and _is_listing(lines):
            continue
        commands.extend(_block_commands(lines, first))
    return commands


def _match(rules, text: str):
    return next(((p, why) for p, why in rules if re.search(p, text)), None)


def _program(part: str) -> str:
    """The part from its program on: `VAR=value curator serve ...` -> `curator serve ...`."""
    return re.sub(r"^(\w+=\S*\s+)+", "", part.strip())


def placeholders(part: str) -> list[str]:
    try:
        words = shlex.split(part)
    except ValueError:
        return [part]
    return [w for w in words[1:] if "=" not in w and _PLACEHOLDER.match(w) and not (ROOT / w).exists()]


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ the fresh copy and its teacher


def tracked_files(root: Path) -> list[str]:
    """The files a fresh clone has (tracked, plus new files not ignored: a README edit being tested
    before its commit still counts)."""
    try:
        r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, text=True, check=True)
        return sorted({f for f in r.stdout.split("\0") if f and (root / f).is_file()})
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist): what .gitignore leaves
        skip = {".git", ".venv", "out", "build", "__pycache__", ".pytest_cache", "artifacts"}
        return sorted(str(f.relative_to(root)) for f in root.rglob("*")
                      if f.is_file() and not skip & set(f.relative_to(root).parts) and ".egg-info" not in str(f))


def fresh_copy(dest: Path) -> Path:
    for rel in tracked_files(ROOT):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return dest


def manifests_in(copy: Path) -> dict[Path, dict]:
    found = {}
    for p in sorted(copy.rglob("*.y*ml")):
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("teacher"), dict) and "source" in data:
            found[p] = data
    return found


def _paid_or_remote(teacher: dict) -> bool:
    host = urllib.parse.urlsplit(str(teacher.get("base_url", ""))).hostname or ""
    return bool(teacher.get("api_key_env")) or host not in ("127.0.0.1", "localhost", "::1")


def shims(dest: Path) -> Path:
    """`python`, `python3`, `pip` and `curator` for this interpreter (the copy's package first on
    PYTHONPATH), in dest/bin and in the copy's .venv/bin, where the README's setup puts them."""
    dest.mkdir(parents=True, exist_ok=True)
    exe = shlex.quote(sys.executable)
    for name, body in (("python", f'exec {exe} "$@"'), ("python3", f'exec {exe} "$@"'),
                       ("pip", f'exec {exe} -m pip "$@"'), ("curator", f'exec {exe} -m curator "$@"')):
        p = dest / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(0o755)
    return dest


@dataclass
class Result:
    code: int | None
    output: str
    note: str = ""


class Session:
    """One fresh copy, its local teacher and the README's commands run in order (a test run
    alone first runs the commands before it: later ones use what earlier ones made)."""

    def __init__(self, tmp: Path, teacher_url: str, key_envs: set[str]):
        self.copy = tmp / "repo"
        self.bin = shims(tmp / "bin")
        shims(self.copy / ".venv" / "bin")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
        self.env.update({
            "PATH": f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}",
            "PYTHONPATH": str(self.copy),
            "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1",
            **{k: "sk-readme-test-dummy" for k in key_envs},
        })
        self.results: dict[int, Result] = {}
        self.teacher_url = teacher_url

    def run_upto(self, index: int) -> Result:
        for i in range(index + 1):
            if i not in self.results:
                self.results[i] = self.run(COMMANDS[i])
        return self.results[index]

    def run(self, cmd: Command) -> Result:
        notes, parts = [], []
        for part in cmd.parts:
            setup = _match(SETUP, _program(part))
            if setup:
                notes.append(f"skipped `{part}`: {setup[1]}")
            else:
                parts.append(part[:-1].rstrip() if part.endswith("&") else part)  # `&`: in the foreground
        if len(parts) > 1 and not any(self.special(p) for p in parts):
            parts = [" && ".join(parts)]  # one shell, so `cd DIR && ...` holds
        outputs = []
        for part in parts:
            kind, why = self.special(part) or ("shell", "")
            r = {"help": lambda: self.check_help(part, why), "server": lambda: self.check_server(part),
                 "shell": lambda: self.shell(part)}[kind]()
            outputs.append(f"$ {part}\n{r.output}")
            notes.append(r.note)
            if r.code != 0:
                return Result(r.code, "\n".join(outputs), "; ".join(n for n in notes if n))
        return Result(0, "\n".join(outputs), "; ".join(n for n in notes if n))

    @staticmethod
    def special(part: str) -> tuple[str, str] | None:
        heavy, holes = _match(HEAVY, _program(part)), placeholders(part)
        if heavy or holes:
            return "help", heavy[1] if heavy else f"placeholders {' '.join(holes)}"
        if any(re.search(p, _program(part)) for p in SERVERS):
            return "server", ""
        return None

    def shell(self, part: str, timeout: float = COMMAND_TIMEOUT_S) -> Result:
        try:
            r = subprocess.run(["bash", "-c", part], cwd=self.copy, env=self.env, capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            out = "".join(x.decode() if isinstance(x, bytes) else x for x in (e.stdout, e.stderr) if x)
            return Result(None, out, f"still running after {timeout}s: if it serves, add it to SERVERS")
        note = ""
        if r.returncode == 127:
            note = ("not found: if this line is not a command, show it in a fence tagged text, or prompt the "
                    "block's commands with `$ ` (tests/test_readme.py's docstring)")
        return Result(r.returncode, r.stdout + r.stderr, note)

    def check_help(self, part: str, why: str) -> Result:
        words = shlex.split(part)
        head = []
        for w in words:
            if w.startswith("-") or _PLACEHOLDER.match(w):
                break
            head.append(w)
        r = self.shell(shlex.join([*head, "--help"]), timeout=HELP_TIMEOUT_S)
        if r.code != 0 or "usage" not in r.output.lower():
            return Result(r.code or 1, r.output, f"`{shlex.join(head)} --help` printed no usage ({why})")
        used = {w.strip("[]").split("=")[0] for w in words if w.strip("[").startswith("--")}
        missing = sorted(o for o in used if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", r.output))
        if missing:
            return Result(1, r.output, f"--help of `{shlex.join(head)}` lists no {', '.join(missing)}")
        return Result(0, r.output, f"checked against --help ({why})")

    def check_server(self, part: str) -> Result:
        proc = subprocess.Popen(["bash", "-c", "exec " + part], cwd=self.copy, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        url, answered, exited, deadline = None, None, None, time.monotonic() + SERVER_TIMEOUT_S
        try:
            while time.monotonic() < deadline and proc.poll() is None and answered is None:
                m = re.search(r"https?://[^\s/]+(/[^\s'\"]*)?", "".join(lines))
                url = m.group(0).rstrip(".,;)") if m else None
                if url:
                    answered = _answers(url)
                time.sleep(0.2)
        finally:
            exited = proc.poll()
            if exited is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            reader.join(timeout=5)
        out = "".join(lines)
        if answered is None:
            if exited is not None:
                return Result(exited or 1, out, f"the server exited with code {exited} before answering")
            what = "printed no URL" if not url else f"did not answer on {url}"
            return Result(1, out, f"server {what} within {SERVER_TIMEOUT_S}s")
        return Result(0, out, f"answered HTTP {answered} on {url}")


def _answers(url: str) -> int | None:
    """The HTTP status a server answers with (an OpenAI-style base URL: its /models), None if none."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + ("/models" if url.rstrip("/").endswith("/v1") else ""), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code if e.code < 500 else None
    except OSError:
        return None


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme")
    copy = fresh_copy(tmp / "repo")
    found = manifests_in(copy)
    found = {p: m for p, m in found.items() if _paid_or_remote(m["teacher"])}
    models = sorted({str(m["teacher"].get("model")) for m in found.values() if m["teacher"].get("model")})
    key_envs = {m["teacher"]["api_key_env"] for m in found.values() if m["teacher"].get("api_key_env")}
    with ServerProcess({"models": models or ["teacher"], "mix": {"right": 0.8, "wrong": 0.1, "truncated": 0.1}}) as teacher:
        for path, data in found.items():  # every paid or remote teacher is the local one
            if not _paid_or_remote(data["teacher"]):
                continue  # the demo's, which starts its own; a server on this machine the README starts
            data["teacher"]["base_url"] = teacher.base_url
            data["teacher"].pop("replicas", None)
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        yield Session(tmp, teacher.base_url, key_envs)


# ------------------------------------------------------------------ the tests


def test_readme_has_commands():
    """The parser finds the README's commands (a parser that finds none would pass every check)."""
    texts = [c.text for c in COMMANDS]
    assert len(COMMANDS) >= 10, texts
    assert any(t.startswith("curator run ") for t in texts), texts
    assert any("curator serve" in t for t in texts), texts


@pytest.mark.timeout(1200)  # run alone (-k), a command first runs every command above it
@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[c.id for c in COMMANDS])
def test_readme_command(session, index):
    cmd = COMMANDS[index]
    r = session.run_upto(index)
    assert "Traceback" not in r.output, f"{cmd.id}\n{r.note}\n{r.output[r.output.index('Traceback'):][:4000]}"
    assert r.code == 0, f"{cmd.id} ended with {r.code}: {r.note}\n{r.output[-4000:]}"


def _paid_manifests() -> list[tuple[str, str]]:
    """(README command, manifest) for each manifest a command names whose teacher needs a key."""
    out = []
    for cmd in COMMANDS:
        for word in shlex.split(cmd.text):
            p = ROOT / word
            if p.suffix in (".yaml", ".yml") and p.is_file():
                data = yaml.safe_load(p.read_text(encoding="utf-8"))
                if isinstance(data, dict) and isinstance(data.get("teacher"), dict) and data["teacher"].get("api_key_env"):
                    if word not in {m for _, m in out}:
                        out.append((cmd.id, word))
    return out


@pytest.mark.parametrize("manifest", [m for _, m in _paid_manifests()])
def test_key_not_set(tmp_path, manifest):
    """A paid manifest run without its key: one line naming the variable, exit 2, nothing sent."""
    copy = fresh_copy(tmp_path / "repo")
    env_name = yaml.safe_load((copy / manifest).read_text(encoding="utf-8"))["teacher"]["api_key_env"]
    env = {k: v for k, v in os.environ.items() if k != env_name}
    env.update(PYTHONPATH=str(copy), COLUMNS="200", NO_COLOR="1")
    r = subprocess.run([sys.executable, "-m", "curator", "run", manifest], cwd=copy, env=env, capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert r.returncode == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and env_name in lines[0] and "not set" in lines[0], out


def test_block_rules():
    """The rules of the docstring on the README's shapes: a listing, a command block, comments,
    continuations, a yaml block, a console block with output, placeholders."""
    sample = ("text\n\n    OUT/shards/*.parquet   shards\n                           more words\n    curator/run.py   ties\n\n"
              "and\n\n    curator status out/x   # counts\n    python bench/a.py \\\n      --n 5\n\n"
              "```yaml\nteacher: {x: 1}\n```\n\n```console\n$ curator report out/x --json\n{\"a\": 1}\n```\n")
    got = [c.text for c in readme_commands(sample)]
    assert got == ["curator status out/x", "python bench/a.py --n 5", "curator report out/x --json"], got
    assert split_and("a 'x && y' && b # c") == ["a 'x && y'", "b # c"]
    assert strip_comment("curator run m.yaml   # sample, store") == "curator run m.yaml"
    assert strip_comment("echo '#1' x") == "echo '#1' x"
    assert placeholders("curator filter OUT --chain f.yaml [--ray-address HOST:6379]") == ["OUT", "[--ray-address", "HOST:6379]"]
    assert placeholders("curator run manifests/gsm8k-r1.yaml --worker 1/3") == []
    assert placeholders("pip install -e '.[ray]'") == []
    assert _match(SETUP, "python3 -m venv .venv") and _match(SETUP, ".venv/bin/pip install -q -e '.[test]'")
    assert _match(SETUP, "bash .ci/run") and not _match(SETUP, "curator run manifests/x.yaml")


def test_manifest_comments_follow_the_readme():
    """The ready manifests' and chains' comments give the README's instructions: an install they
    name is one the README gives, and nothing the README calls deprecated is recommended."""
    readme = README.read_text(encoding="utf-8")
    deprecated = set(re.findall(r"`([^`]+)`[^.`]{0,20}?\bis deprecated", readme))
    deprecated |= {d.split(":")[0].strip() for d in deprecated}
    assert deprecated, "the README names no deprecated option any more: drop this part"
    for path in sorted([*(ROOT / "manifests").glob("*.yaml"), *(ROOT / "filters").glob("*.yaml")]):
        comments = "\n".join(ln.split("#", 1)[1] for ln in path.read_text(encoding="utf-8").splitlines() if "#" in ln)
        for install in re.findall(r"pip install [^)\n]*?'[^']*'", comments):
            assert install in readme, f"{path.name}: `{install}` is not how the README installs"
        for term in deprecated:
            assert term not in comments, f"{path.name} recommends {term!r}, which the README calls deprecated"
