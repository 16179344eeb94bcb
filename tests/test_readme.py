"""The documentation's Python snippets, run as a reader would run them, and
`make demo` as a newcomer would.

Every ```python block of README.md and docs/*.md is one of:

- a server: it calls ``.run(`` (it serves until stopped). It runs as a
  program with the port 8000 it names rewritten to a free one; the test
  waits until that port accepts, and stops it with SIGINT (Ctrl-C), after
  which it must exit with status 0.
- a client: not a server, and it names ``127.0.0.1:8000``. It runs (port
  rewritten) against the last server block above it in the same file while
  that server runs, and must exit with status 0.
- standalone: anything else. It runs and must exit with status 0.
- a fragment: the line before its fence (blank lines aside) is
  ``<!-- snippet: fragment: <why it cannot run alone> -->`` (a placeholder
  host or file, a ``...``, a before/after pair of two libraries). It is
  compiled (top-level ``await`` allowed) and its ``roomcast`` imports are
  run. Any other ``<!-- snippet`` comment is an error.

A ```text block after a python block (and before the next one) is what the
prose says that block prints: a client's or a standalone block's standard
output, line for line; a server's standard error, each line in order among
what it printed (8000 rewritten there too).

Each block runs as a file of its own in a temporary directory, with this
checkout's roomcast importable (or the installed one the tests use).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import roomcast

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PORT = "8000"
FRAGMENT = re.compile(r"<!-- snippet: fragment: \S.* -->")  # with the reason
MARKER = re.compile(r"<!--\s*snippet")
RUN_TIMEOUT = 30


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    fragment: bool
    output: list[str] | None = None  # the ```text block after it, if any
    clients: list[Block] = field(default_factory=list)  # a server's

    @property
    def server(self) -> bool:
        return not self.fragment and ".run(" in self.code

    @property
    def client(self) -> bool:
        return not self.fragment and not self.server and f"127.0.0.1:{PORT}" in self.code

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def parse(path: Path) -> list[Block]:
    """The python blocks of one Markdown file, with their shown outputs."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    last: Block | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang = line[3:].strip()
            end = i + 1
            while not lines[end].startswith("```"):
                end += 1
            body = lines[i + 1 : end]
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            if lang == "python":
                last = Block(path, i + 1, "\n".join(body) + "\n", bool(FRAGMENT.fullmatch(before)))
                blocks.append(last)
            elif lang == "text" and last is not None and last.output is None:
                last.output = body
            if MARKER.match(before) and not (FRAGMENT.fullmatch(before) and lang == "python"):
                raise AssertionError(f"{path.name}:{i + 1}: {before} before a ```{lang} block")
            i = end + 1
            continue
        i += 1
    return blocks


def units() -> list[Block]:
    """Standalone blocks, fragments and servers (each with its clients)."""
    found: list[Block] = []
    for path in DOCS:
        server: Block | None = None
        for block in parse(path):
            if block.client:
                assert server is not None, f"{block.name}: a client with no server block above it"
                server.clients.append(block)
                continue
            if block.server:
                server = block
            found.append(block)
    return found


UNITS = units()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment() -> dict[str, str]:
    package = str(Path(roomcast.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [package, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def script(tmp_path: Path, block: Block, port: int) -> Path:
    file = tmp_path / f"snippet_{block.line}.py"
    file.write_text(block.code.replace(PORT, str(port)), encoding="utf-8")
    return file


def run(tmp_path: Path, block: Block, port: int) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(script(tmp_path, block, port))],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, f"{block.name} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def shown(block: Block, port: int) -> list[str]:
    assert block.output is not None
    return [line.replace(PORT, str(port)) for line in block.output if line.strip()]


def check_stdout(block: Block, done: subprocess.CompletedProcess[str], port: int) -> None:
    if block.output is not None:
        printed = [line for line in done.stdout.splitlines() if line.strip()]
        assert printed == shown(block, port), f"{block.name} printed other lines than the text shows"


def wait_until_listening(process: subprocess.Popen[str], port: int, name: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"{name} exited with {process.returncode} before listening:\n{err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{name} did not listen on {port} within {RUN_TIMEOUT} s")


def test_the_docs_have_snippets_of_every_kind():
    """The parser finds what is there (a test that finds nothing passes)."""
    kinds = {"server": 0, "client": 0, "standalone": 0, "fragment": 0}
    for block in UNITS:
        kind = "fragment" if block.fragment else "server" if block.server else "standalone"
        kinds[kind] += 1
        kinds["client"] += len(block.clients)
    assert kinds["server"] >= 2 and kinds["client"] >= 2 and kinds["standalone"] >= 1, kinds
    # Fragments are the exception: each must say why it cannot run (see the
    # module's docstring); keep them few.
    assert kinds["fragment"] <= 6, kinds


@pytest.mark.parametrize("block", UNITS, ids=lambda block: block.name)
def test_snippet(block: Block, tmp_path: Path):
    if block.fragment:
        check_fragment(block)
    elif block.server:
        check_server(block, tmp_path)
    else:
        check_stdout(block, run(tmp_path, block, int(PORT)), int(PORT))


def check_fragment(block: Block) -> None:
    tree = compile(block.code, block.name, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    compile(tree, block.name, "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    imports = [
        node
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and all(a.name.split(".")[0] == "roomcast" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "roomcast")
    ]
    exec(compile(ast.Module(body=imports, type_ignores=[]), block.name, "exec"), {})  # noqa: S102


def check_server(block: Block, tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(script(tmp_path, block, port))],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_listening(process, port, block.name)
        for client in block.clients:
            check_stdout(client, run(tmp_path, client, port), port)
        process.send_signal(signal.SIGINT)  # Ctrl-C, as the prose says
        _, err = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, f"{block.name} exited with {process.returncode} on Ctrl-C:\n{err}"
    if block.output is not None:
        expected = shown(block, port)
        lines = iter(err.splitlines())
        missing = [line for line in expected if not any(line == got for got in lines)]
        assert not missing, f"{block.name} did not print {missing} (its stderr:\n{err})"


# -- make demo -------------------------------------------------------------------


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_make_demo_installs_the_build_and_no_test_tools(tmp_path: Path):
    """What `make demo` would do on a machine with nothing installed yet
    (a .venv that does not exist): the build's packages, a virtual
    environment it owns, `pip install .` into it; no browser, Redis, test or
    lint tool, and nothing pip-installed into the system interpreter."""
    venv = tmp_path / "venv"
    plan = make("-n", "demo", f"VENV={venv}", "PORT=8123")
    assert plan.returncode == 0, plan.stderr
    text = plan.stdout.replace(str(venv), "VENV")  # tmp_path holds "pytest"
    for needed in ["libuv1-dev", "libwslay-dev", "libssl-dev", "libhiredis-dev", "libdeflate-dev", "zlib1g-dev"]:
        assert needed in text
    assert "-m venv VENV" in text and "VENV/bin/python -m pip install" in text
    assert "--port 8123" in text
    for unwanted in ["chromium", "redis-server", "clang-format", "mypy", "jupyter", "pytest", "fastapi"]:
        assert unwanted not in text, f"make demo would install {unwanted}"
    assert "--break-system-packages" not in text and "--user" not in text
    # The test dependencies are still what `make test` installs.
    test_plan = make("-n", "deps-system", "deps-python")
    assert "chromium" in test_plan.stdout and "pytest" in test_plan.stdout


def test_the_demo_on_a_busy_port_says_so_in_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(REPO / "examples" / "chat.py"), "--port", str(port)],
            env=environment(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
    assert f"PORT={port + 1}" in lines[0]


def test_make_demo_serves_the_chat_page():
    """`make demo PORT=...` serves the page and the JavaScript client. It
    runs only where `make demo` has already built .venv/ and no source has
    changed since (building it takes a minute and the network)."""
    if make("-q", ".venv/.roomcast-installed").returncode != 0:
        pytest.skip("run `make demo` once first: .venv/ is missing or out of date")
    port = free_port()
    demo = subprocess.Popen(
        ["make", "--no-print-directory", "demo", f"PORT={port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: make and the server
    )
    try:
        wait_until_listening(demo, port, "make demo")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and b"/roomcast.js" in page.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/roomcast.js", timeout=10) as script:
            assert script.status == 200
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:
            _, err = demo.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            _, err = demo.communicate()
    assert "Traceback" not in err, err


# -- links -----------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose(path: Path) -> list[str]:
    """The lines of a Markdown file outside its code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(REPO)))
def test_relative_links_lead_somewhere(path: Path):
    """Every relative link of the README and docs/ names a file of the
    repository, and an anchor names a heading of its page."""
    checked = 0
    for line in prose(path):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            page = (path.parent / file).resolve() if file else path
            assert page.exists(), f"{path.name}: {target} names no file"
            if anchor:
                headings = {slug(h.lstrip("#")) for h in prose(page) if re.match(r"#{1,6} ", h)}
                assert anchor in headings, f"{path.name}: {target}: no such heading in {page.name}"
            checked += 1
    if path.name == "README.md":
        assert checked >= 10
