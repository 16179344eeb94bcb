#!/usr/bin/env python3
"""Autobahn TestSuite conformance runs against roomcast's server and clients.

    python3 tests/conformance/run.py [--target all|server|server-tls|relay|uvicorn|client-async|client-sync]
                     [--cases 1.*,2.*,...|quick] [--out DIR]
                     [--tool auto|autobahntestsuite|kosoku] [--python2 PATH]

Targets (``--target``, default ``all``: each in turn):

- ``server``: examples/echo.py, where Python echoes each message;
- ``server-tls``: the same over TLS (``examples/echo.py --certfile``, the
  tool connecting to wss://): the frames reach the core in TLS records
  that split them anywhere, and the server encrypts what it queued for a
  connection in one pass per loop turn. The certificate is self-signed for
  127.0.0.1 and localhost, made with the ``openssl`` command into
  build/conformance/tls/; wstest's fuzzing client does not verify it (no
  ``hostname`` in its servers spec: Twisted's ``ClientContextFactory``,
  OpenSSL's default of no verification, no SNI). Its summary adds the TLS
  version and cipher suite the server's connections negotiated (the line
  examples/echo.py prints when stopped), and the target fails if fewer
  TLS connections reached the echo than cases ran. kosoku cannot connect
  to wss:// (it refuses the scheme), so under kosoku this target is
  skipped and says so (an error only with ``--target server-tls``);
- ``relay``: ``examples/echo.py --relay``, where the core relays each
  message back through a ``Room(relay="all")`` without Python;
- ``uvicorn``: ``examples/echo.py --uvicorn``, an ASGI app served by
  uvicorn with roomcast's protocol: every connection is one that uvicorn
  accepted and handed to the core (``Core.adopt``);
- ``client-async``: ``roomcast.connect``, the asyncio client, and
- ``client-sync``: ``roomcast.WebSocket``, the synchronous one, each driven
  by tests/conformance/client_driver.py against the tool's fuzzing server,
  echoing what it receives.

1. Installs the test tool if missing, under build/conformance/ and never
   into the project's interpreter. ``--tool auto`` (the default) takes the
   Autobahn TestSuite itself (PyPI ``autobahntestsuite``) when a Python 2.7
   interpreter is found, since that package is Python 2 code; it is
   installed by that interpreter's pip into
   build/conformance/autobahntestsuite-py2/. Otherwise it takes kosoku (PyPI
   ``kosoku``, a Python 3 runner of the same Autobahn case files), in its
   own virtual environment build/conformance/venv-kosoku/.
2. For a server target, starts examples/echo.py (PYTHONPATH=python) on a
   free loopback port (with TLS for ``server-tls``) and runs the tool's
   fuzzing client against it (``wstest -m fuzzingclient`` or kosoku's
   ``run_fuzzingclient``). For a client
   target, starts the tool's fuzzing server (``wstest -m fuzzingserver`` or
   kosoku's ``run_fuzzingserver``) and has the client under test drive
   every case. The extension is built first with ``make build`` if it
   cannot be imported.
3. Sections 1-7, 9, 10, 12 and 13 by default (every section of the
   suite; 8 and 11 do not exist). Sections 12 and 13 are
   permessage-deflate (RFC 7692): the tool offers it (fuzzing client) or
   answers the client's offer (fuzzing server) with the parameters each
   case names, then exchanges 1000 messages of 16 bytes to 128 KiB of real
   text, JSON and binary data, fragmented or not; they take most of the
   run's time (see each summary's seconds per section). ``--cases quick``
   keeps sections 1-10 and the cases of 12 and 13 whose messages are at
   most 64 KiB (156 of 216), about a third of their time. One line is
   printed per case.
4. Stops everything and writes the tool's own report (HTML and JSON) to
   ``--out``/TARGET (default build/conformance/report/TARGET, not
   committed), then ``summary.md`` (counts per section, tool, date,
   command, and every case that did not pass) and ``results.json`` (case id
   -> behavior, behaviorClose, duration in ms). A run of the default
   selection writes these two where they are committed, in
   tests/reports/conformance/TARGET/ (generated records kept apart from the
   tests and from this tooling); a run of other cases writes them into the
   report directory so it cannot replace the full record.

A case passes when its behavior is OK, NON-STRICT, INFORMATIONAL or
UNIMPLEMENTED and its closing behavior is OK or INFORMATIONAL, as in
Autobahn's reports, except that UNIMPLEMENTED fails in sections 12 and
13: there it means the peer did not negotiate permessage-deflate (the case
then sends nothing), and every roomcast peer must. Exit status: 0 when
every case of every target passed, 1 when one did not (or the peer under
test died during the run; a skipped target does not count), 2 when the
tool or the peer could not be run at all. Every child is stopped on
every exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD = ROOT / "build" / "conformance"
DRIVER = HERE / "kosoku_driver.py"
CLIENT_DRIVER = HERE / "client_driver.py"
# The committed record of a full run, one folder per target.
RECORDS = ROOT / "tests" / "reports" / "conformance"
ECHO = ROOT / "examples" / "echo.py"

DEFAULT_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.*,13.*"
# ``--cases quick``: sections 1-10 whole, and the cases of sections 12 and 13
# whose messages are at most 64 KiB: each subsection's 18 cases are the
# sizes 16 B to 128 KiB, unfragmented (1-10) then fragmented (11-18), and
# the five of 128 KiB (10, 15-18) take about two thirds of the time of the
# two sections. Named one by one: wstest matches a glob at the start of an
# id only ("12.*.1" would take 12.1.10 too).
QUICK_SIZES = (*range(1, 10), *range(11, 15))
QUICK_CASES = ",".join(
    ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
    + [
        f"{section}.{sub}.{n}"
        for section, subs in ((12, 5), (13, 7))
        for sub in range(1, subs + 1)
        for n in QUICK_SIZES
    ]
)
# What each target runs, as the summary names it.
TARGETS = {
    "server": "Server: `examples/echo.py` (Python echoes each message as received) on 127.0.0.1",
    "server-tls": (
        "Server: `examples/echo.py --certfile build/conformance/tls/cert.pem --keyfile"
        " build/conformance/tls/key.pem` (Python echoes each message as received, over TLS:"
        " the tool connects to `wss://`) on 127.0.0.1"
    ),
    "relay": (
        "Server: `examples/echo.py --relay` (each connection alone in a"
        ' `Room(relay="all")`: the core relays each message back, Python never'
        " sees it) on 127.0.0.1"
    ),
    "uvicorn": (
        "Server: `examples/echo.py --uvicorn` (an ASGI app echoes each message,"
        " served by uvicorn with `roomcast.uvicorn.WebSocketProtocol`: uvicorn"
        " parses the upgrade, the core serves the connection) on 127.0.0.1"
    ),
    "client-async": (
        "Client: `roomcast.connect` (the asyncio client) echoing each message,"
        " driven by `tests/conformance/client_driver.py async` against the tool's"
        " fuzzing server on 127.0.0.1"
    ),
    "client-sync": (
        "Client: `roomcast.WebSocket` (the synchronous client, blocking `recv`)"
        " echoing each message, driven by `tests/conformance/client_driver.py sync`"
        " against the tool's fuzzing server on 127.0.0.1"
    ),
}
AGENT = "roomcast"
# Cases never run (comma-separated globs); none since roomcast negotiates
# permessage-deflate (sections 12 and 13).
EXCLUDED = ""

AUTOBAHN = ("autobahntestsuite", "25.10.1")
AUTOBAHN_DIR = BUILD / "autobahntestsuite-py2"
KOSOKU = ("kosoku", "0.1.0")
# What `wstest` 25.10.1 does in a Python 3 venv (seen on Python 3.11): the
# package is Python 2.7 code (implicit relative imports, print statements).
AUTOBAHN_ON_PY3 = "`ModuleNotFoundError: No module named '_version'`, its first implicit relative import"

SECTIONS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/Performance",
    "10": "Miscellaneous",
    "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}
BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
# The permessage-deflate sections. The tool calls a case of theirs
# UNIMPLEMENTED when the peer did not negotiate the extension and sends no
# message at all; roomcast's server and clients negotiate it with every
# offer and answer the tool makes there, so that verdict is a failure.
DEFLATE_SECTIONS = {"12", "13"}
CLOSE_PASSING = {"OK", "INFORMATIONAL"}
NO_RESULT = "NO RESULT"  # ours: the tool gave the case no verdict at all

# server-tls: a self-signed certificate for the loopback names, remade when
# it has less than a day left.
TLS_DIR = BUILD / "tls"
TLS_CERT = TLS_DIR / "cert.pem"
TLS_KEY = TLS_DIR / "key.pem"
TLS_NAMES = "DNS:localhost,IP:127.0.0.1"
# How wstest's fuzzing client speaks TLS (autobahntestsuite's fuzzing.py,
# with no "hostname" in the servers spec).
WSTEST_TLS = (
    "wstest connects to the `wss://` URL with Twisted's `ssl.ClientContextFactory`"
    " (pyOpenSSL, `SSLv23_METHOD`): no certificate verification (the self-signed"
    " certificate of `build/conformance/tls/` is taken as is), no SNI"
)
# What kosoku 0.1.0 answers a wss:// URL (its run_fuzzingclient).
KOSOKU_NO_WSS = 'ValueError: invalid url scheme "wss": expected ws or http (or none)'

SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 15.0


class CannotRun(Exception):
    """The tool or the server could not be run: exit status 2."""


def say(message: str) -> None:
    print(f"conformance: {message}", flush=True)


def brief(cases: str) -> str:
    """A selection as a log line shows it: ``quick`` by that name."""
    return "quick" if cases == QUICK_CASES else cases


def excluding() -> str:
    return f" (excluding {EXCLUDED})" if EXCLUDED else ""


def case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- tools -------------------------------------------------------------------


def venv_python(name: str) -> Path:
    return BUILD / f"venv-{name}" / "bin" / "python"


def create_venv(path: Path) -> None:
    cmd = [sys.executable, "-m", "venv", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0:
        return
    shutil.rmtree(path, ignore_errors=True)
    # Debian's python3 keeps ensurepip, which venv needs, in python3-venv.
    if "ensurepip" in done.stdout + done.stderr and os.geteuid() == 0 and shutil.which("apt-get"):
        say("the venv module needs python3-venv: apt-get update && apt-get install python3-venv")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for apt in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "python3-venv"]):
            if subprocess.run(apt, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                raise CannotRun(f"{shlex.join(apt)} failed")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            return
        shutil.rmtree(path, ignore_errors=True)
    raise CannotRun(
        f"cannot create a virtual environment ({shlex.join(cmd)}):\n{tail(done.stdout + done.stderr)}\n"
        "on Debian or Ubuntu, as root: apt-get update && apt-get install -y python3-venv"
    )


def ensure_tool(name: str, version: str) -> Path:
    """The Python of build/conformance/venv-NAME with NAME==VERSION in it."""
    python = venv_python(name)
    if not python.exists():
        say(f"creating {python.parents[1].relative_to(ROOT)}")
        create_venv(python.parents[1])
    probe = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0 and probe.stdout.strip() == version:
        return python
    say(f"installing {name}=={version} into {python.parents[1].relative_to(ROOT)}")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{name}=={version}"]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotRun(f"pip could not install {name}=={version}:\n{tail(done.stdout + done.stderr)}")
    return python


def find_python2(explicit: str | None) -> tuple[str | None, str]:
    """(a Python 2.7 interpreter, its version) or (None, where we looked)."""
    if explicit:
        candidates = [explicit]
    else:
        # PATH first; a pyenv shim on PATH fails unless 2.7 is selected, so
        # also its versions directory.
        candidates = [c for c in (shutil.which("python2.7"), shutil.which("python2"), shutil.which("pypy")) if c]
        pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
        candidates += [str(p) for p in sorted(pyenv_root.glob("versions/2.7*/bin/python2.7"), reverse=True)]
    for candidate in candidates:
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                capture_output=True,
                text=True,
                timeout=60,
                env=tool_env(),
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.startswith("2.7."):
            return candidate, done.stdout.strip()
    where = explicit or "python2.7, python2 and pypy on PATH and pyenv's versions/2.7.*"
    return None, where


def tool_env() -> dict[str, str]:
    """The environment of the tools: nothing of the project's Python path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def wstest_command(python2: str) -> list[str]:
    # --target installs no console script that works and leaves namespace
    # packages (zope.interface) to .pth files: addsitedir reads them.
    boot = (
        "import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'wstest'; "
        "from autobahntestsuite.wstest import run; run()"
    )
    return [python2, "-c", boot, str(AUTOBAHN_DIR)]


def ensure_autobahn(python2: str) -> list[str]:
    """The command that runs wstest, after installing the Autobahn TestSuite
    with the Python 2.7's own pip into build/conformance/ if missing."""
    name, version = AUTOBAHN
    if not (AUTOBAHN_DIR / f"{name}-{version}.dist-info").is_dir():
        shutil.rmtree(AUTOBAHN_DIR, ignore_errors=True)
        say(
            f"installing {name}=={version} with {python2} -m pip into {AUTOBAHN_DIR.relative_to(ROOT)} (about a minute)"
        )
        pip = [python2, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location"]
        pip += ["--target", str(AUTOBAHN_DIR), f"{name}=={version}"]
        done = subprocess.run(pip, capture_output=True, text=True, env=tool_env())
        if done.returncode != 0:
            shutil.rmtree(AUTOBAHN_DIR, ignore_errors=True)
            raise CannotRun(f"{shlex.join(pip)} failed:\n{tail(done.stdout + done.stderr)}")
    cmd = wstest_command(python2)
    try:
        done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120, env=tool_env())
    except subprocess.TimeoutExpired:
        raise CannotRun(f"wstest --help did not return within 120 s under {python2}") from None
    if done.returncode != 0:
        raise CannotRun(f"wstest does not start under {python2}:\n{tail(done.stdout + done.stderr)}")
    return cmd


# --- the server --------------------------------------------------------------


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "python"), env.get("PYTHONPATH", "")) if p)
    return env


def ensure_built() -> None:
    check = [sys.executable, "-c", "import roomcast._core"]
    if subprocess.run(check, env=server_env(), cwd=ROOT, capture_output=True).returncode == 0:
        return
    say("roomcast._core cannot be imported: make build")
    if subprocess.run(["make", "build"], cwd=ROOT).returncode != 0:
        raise CannotRun("make build failed (make deps installs what it needs)")
    if subprocess.run(check, env=server_env(), cwd=ROOT).returncode != 0:
        raise CannotRun("roomcast._core still cannot be imported after make build")


def ensure_certificate() -> None:
    """A self-signed certificate for 127.0.0.1 and localhost in
    build/conformance/tls/, made with the ``openssl`` command unless one
    valid for another day is there."""
    if TLS_CERT.exists() and TLS_KEY.exists():
        check = ["openssl", "x509", "-noout", "-checkend", "86400", "-in", str(TLS_CERT)]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return
    if shutil.which("openssl") is None:
        raise CannotRun("the openssl command, which makes the server-tls certificate, is not on PATH")
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    say(f"making a self-signed certificate for {TLS_NAMES} in {TLS_DIR.relative_to(ROOT)}")
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    cmd += ["-days", "30", "-subj", "/CN=roomcast conformance (localhost)", "-addext", f"subjectAltName={TLS_NAMES}"]
    cmd += ["-keyout", str(TLS_KEY), "-out", str(TLS_CERT)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotRun(f"{shlex.join(cmd)} failed:\n{tail(done.stdout + done.stderr)}")


def start_server(
    log_path: Path, children: list[subprocess.Popen[bytes]], options: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts examples/echo.py with ``options`` (added to ``children`` at
    once, so that it is stopped even if the wait below is interrupted);
    returns it and its URL (ws:// or wss://)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(ECHO), *options, "127.0.0.1", "0"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(),
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops it
        )
    children.append(proc)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        found = re.search(r"listening on (wss?://\S+)", log_path.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise CannotRun(
                f"examples/echo.py exited with status {proc.returncode} before listening:\n"
                f"{tail(log_path.read_text(errors='replace'))}"
            )
        if time.monotonic() > deadline:
            raise CannotRun(f"examples/echo.py printed no 'listening on' line in {SERVER_START_TIMEOUT:.0f} s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes] | None) -> int | None:
    """Stops a child started in its own session (SIGTERM, then SIGKILL);
    returns its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()
    return proc.returncode


# --- running the cases -------------------------------------------------------


def clear_report(out: Path) -> None:
    """Removes a previous report from ``out`` (only the tool's files)."""
    for path in out.glob("*"):
        if path.is_file() and (path.name.startswith("index.") or path.name == "selected.json" or "_case_" in path.name):
            path.unlink()


def run_kosoku(python: Path, url: str, out: Path, cases: str, children: list[subprocess.Popen[bytes]]) -> int:
    cmd = [str(python), str(DRIVER), url, str(out), "--cases", cases, "--exclude", EXCLUDED]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
    children.append(proc)
    return proc.wait()


def run_wstest(wstest: list[str], url: str, out: Path, cases: str, children: list[subprocess.Popen[bytes]]) -> int:
    spec = {
        "outdir": str(out),
        "servers": [{"agent": "roomcast", "url": url}],
        "cases": cases.split(","),
        "exclude-cases": [c for c in EXCLUDED.split(",") if c],
        "exclude-agent-cases": {},
    }
    spec_path = BUILD / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    cmd = [*wstest, "-m", "fuzzingclient", "-s", str(spec_path)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=BUILD,
        env=tool_env(),
        start_new_session=True,
    )
    children.append(proc)
    assert proc.stdout is not None
    # wstest announces each case as it starts it; numbered, that is the
    # progress. The verdicts are in its report, read at the end.
    count, total = 0, "?"
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        found = re.match(r"Running test case ID (\S+)", line)
        if found:
            count += 1
            print(f"[{count:>3}/{total}] {found.group(1)}", flush=True)
        elif line and not line.startswith("Cases = "):  # the whole list, one line
            total = re.sub(r".*will run (\d+) test cases.*", r"\1", line) if "will run" in line else total
            print(f"wstest: {line}", flush=True)
    return proc.wait()


# --- the clients --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], log_path: Path, port: int | None, what: str) -> str:
    """The URL of a fuzzing server once it accepts: from its 'listening on'
    line (kosoku) or when its port takes a connection (wstest)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if port is None:
            found = re.search(r"listening on (ws://\S+)", log_path.read_text(errors="replace"))
            if found:
                return found.group(1)
        else:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return f"ws://127.0.0.1:{port}"
            except OSError:
                pass
        if proc.poll() is not None:
            raise CannotRun(
                f"{what} exited with status {proc.returncode}:\n{tail(log_path.read_text(errors='replace'))}"
            )
        if time.monotonic() > deadline:
            raise CannotRun(f"{what} did not listen within {SERVER_START_TIMEOUT:.0f} s")
        time.sleep(0.05)


def start_fuzzingserver(
    tool: Tool, out: Path, cases: str, log_path: Path, children: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], str]:
    port: int | None = None
    if tool.wstest is not None:
        port = free_port()
        spec = {
            "url": f"ws://127.0.0.1:{port}",
            "outdir": str(out),
            "cases": cases.split(","),
            "exclude-cases": [c for c in EXCLUDED.split(",") if c],
            "exclude-agent-cases": {},
        }
        spec_path = BUILD / "fuzzingserver.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        # -u 0: no report web server (it would take port 8080, and a
        # second run at once, or anything else there, would stop this one).
        cmd = [*tool.wstest, "-m", "fuzzingserver", "-s", str(spec_path), "-u", "0"]
        what = "wstest -m fuzzingserver"
    else:
        assert tool.kosoku is not None
        cmd = [str(tool.kosoku), str(DRIVER), "serve", str(out), "--cases", cases, "--exclude", EXCLUDED]
        what = "kosoku's fuzzing server"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=BUILD,
            env=tool_env(),
            start_new_session=True,
        )
    children.append(proc)
    return proc, wait_listening(proc, log_path, port, what)


def run_client_target(target: str, tool: Tool, out: Path, cases: str) -> tuple[float, str]:
    """A roomcast client driven through the tool's fuzzing server:
    (seconds, problems)."""
    kind = target.split("-")[1]
    log_path = BUILD / f"{target}-fuzzingserver.log"
    children: list[subprocess.Popen[bytes]] = []
    note = ""
    try:
        fuzzer, url = start_fuzzingserver(tool, out, cases, log_path, children)
        say(f"fuzzing server at {url} (log {log_path.relative_to(ROOT)}); cases {brief(cases)}{excluding()}")
        t_cases = time.monotonic()
        client = subprocess.Popen(
            [sys.executable, "-u", str(CLIENT_DRIVER), kind, url, AGENT],
            stdin=subprocess.DEVNULL,
            env=server_env(),
            cwd=ROOT,
            start_new_session=True,
        )
        children.append(client)
        status = client.wait()
        seconds = time.monotonic() - t_cases
        if status != 0:
            note = f"tests/conformance/client_driver.py {kind} exited with status {status}"
        if tool.kosoku is not None:  # it writes the report and ends by itself
            try:
                fuzzer.wait(SERVER_START_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise CannotRun(f"kosoku's fuzzing server did not end after the client; see {log_path}") from None
            if fuzzer.returncode != 0:
                raise CannotRun(
                    f"kosoku's fuzzing server exited with status {fuzzer.returncode}:\n{tail(log_path.read_text())}"
                )
    finally:
        for child in reversed(children):
            stop(child)
    return seconds, note


def read_results(out: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(index entries, full case reports of the cases that did not pass)."""
    index_path = out / "index.json"
    if not index_path.exists():
        raise CannotRun(f"the tool wrote no {index_path}")
    agents = json.loads(index_path.read_text())
    if len(agents) != 1:
        raise CannotRun(f"{index_path} holds {len(agents)} agents, expected 1")
    (entries,) = agents.values()
    selected = out / "selected.json"
    if selected.exists():
        for case_id in json.loads(selected.read_text()):
            entries.setdefault(case_id, {"behavior": NO_RESULT, "behaviorClose": NO_RESULT, "duration": None})
    details = {}
    for case_id, entry in entries.items():
        if not passed(case_id, entry) and entry.get("reportfile"):
            report = out / entry["reportfile"]
            if report.exists():
                details[case_id] = json.loads(report.read_text())
    return dict(sorted(entries.items(), key=lambda kv: case_key(kv[0]))), details


def passed(case_id: str, entry: dict[str, Any]) -> bool:
    if entry["behavior"] == "UNIMPLEMENTED" and case_id.split(".")[0] in DEFLATE_SECTIONS:
        return False
    return entry["behavior"] in PASSING and entry["behaviorClose"] in CLOSE_PASSING


# --- the record --------------------------------------------------------------


def one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    flat = flat.replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def shown(path: Path) -> str:
    """``path`` relative to the work tree when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def write_record(
    dest: Path,
    out: Path,
    entries: dict[str, dict[str, Any]],
    details: dict[str, dict[str, Any]],
    tool: str,
    why_tool: str,
    command: str,
    started: datetime.datetime,
    case_seconds: float,
    server_note: str,
    target: str = "server",
    tls: str = "",
) -> None:
    results = {
        case_id: {"behavior": e["behavior"], "behaviorClose": e["behaviorClose"], "duration": e.get("duration")}
        for case_id, e in entries.items()
    }
    (dest / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    sections: dict[str, list[dict[str, Any]]] = {}
    for case_id, entry in entries.items():
        sections.setdefault(case_id.split(".")[0], []).append(entry)
    head = ["section", "cases", *BEHAVIORS, "other", "close not OK", "seconds"]
    rows = [head, ["---"] + ["---:"] * (len(head) - 1)]

    def counts(label: str, group: list[dict[str, Any]]) -> list[str]:
        row = [label, str(len(group))]
        row += [str(sum(e["behavior"] == b for e in group)) for b in BEHAVIORS]
        row.append(str(sum(e["behavior"] not in BEHAVIORS for e in group)))
        row.append(str(sum(e["behaviorClose"] not in CLOSE_PASSING for e in group)))
        row.append(f"{sum(e.get('duration') or 0 for e in group) / 1000:.0f}")
        return row

    for number in sorted(sections, key=int):
        rows.append(counts(f"{number} {SECTIONS.get(number, '')}".strip(), sections[number]))
    rows.append(counts("**all**", [e for group in sections.values() for e in group]))

    failing = [c for c, e in entries.items() if not passed(c, e)]
    lines = [
        f"# Autobahn TestSuite conformance: {target}",
        "",
        "Written by `tests/conformance/run.py`; do not edit by hand. The tool's full",
        f"report (every case with its wire log) is in `{shown(out)}/` after a run;",
        "it is not committed.",
        "",
        f"- {TARGETS[target]}",
        f"- Tool: {tool}",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M')} UTC",
        f"- Command: `{command}`",
        f"- Cases: {len(entries)}"
        + (
            " (sections 12 and 13 with permessage-deflate negotiated)"
            if any(c.split(".")[0] in DEFLATE_SECTIONS for c in entries)
            else ""
        ),
        f"- Wall time of the cases: {case_seconds:.0f} s",
        f"- Result: {'every case passed' if not failing else f'{len(failing)} case(s) did not pass'}",
    ]
    if target == "server-tls":
        lines += [
            f"- TLS client: {WSTEST_TLS}",
            f"- TLS negotiated (the server's connections, from `examples/echo.py`'s closing line: version,"
            f" IANA cipher suite): {tls or 'not known'}",
        ]
    if server_note:
        lines.append(f"- Problems of the peer under test: {server_note}")
    lines += ["", "## Per section", ""]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        "A case passes when its behavior is OK, NON-STRICT (a SHOULD of RFC 6455 not",
        "followed, still conformant), INFORMATIONAL (behaviour the RFC leaves open)",
        "or UNIMPLEMENTED, and its closing behavior is OK or INFORMATIONAL; in",
        "sections 12 and 13 (permessage-deflate) UNIMPLEMENTED fails: the peer",
        "did not negotiate the extension. `seconds` adds up the tool's duration",
        "of each case in the section.",
        "`close not OK` counts closing handshakes judged otherwise (wrong close",
        "code, unclean close, or the wrong side closing), `other` verdicts such",
        f"as `{NO_RESULT}` (the tool produced none).",
        "",
        "## Which tool",
        "",
        why_tool,
        "",
    ]
    if failing:
        lines += ["## Cases that did not pass", ""]
        for case_id in failing:
            entry, case = entries[case_id], details.get(case_id, {})
            lines.append(f"- **{case_id}**: {entry['behavior']}, close {entry['behaviorClose']}")
            if case:
                lines.append(f"  - case: {one_line(case.get('description', ''))}")
                lines.append(f"  - expected: {one_line(case.get('expectation', ''))}")
                got = f"{case.get('result', '')} {case.get('resultClose', '')}"
                code = case.get("remoteCloseCode")
                got += f" (roomcast's close code: {code})" if code is not None else " (roomcast sent no close frame)"
                lines.append(f"  - got: {one_line(got)}")
        lines.append("")
    others = [c for c, e in entries.items() if passed(c, e) and e["behavior"] != "OK"]
    if others:
        lines += ["## Cases passed with a verdict other than OK", ""]
        for verdict in ("NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"):
            ids = [c for c in others if entries[c]["behavior"] == verdict]
            if ids:
                lines.append(f"- {verdict}: {', '.join(ids)}")
        lines.append("")
    (dest / "summary.md").write_text("\n".join(lines))


# --- main --------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        choices=("all", *TARGETS),
        default="all",
        help="what to test (default all: each target in turn)",
    )
    parser.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help=f"comma-separated case ids or globs (default {DEFAULT_CASES}), or quick: sections 1-10"
        " and the cases of 12 and 13 with messages up to 64 KiB",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BUILD / "report",
        help="the tool's reports, one directory per target (default build/conformance/report)",
    )
    parser.add_argument(
        "--tool",
        choices=("auto", "autobahntestsuite", "kosoku"),
        default="auto",
        help="auto: the Autobahn TestSuite if a Python 2.7 is found, else kosoku",
    )
    parser.add_argument("--python2", help="the Python 2.7 interpreter for the Autobahn TestSuite (default: searched)")
    args = parser.parse_args()
    if args.cases == "quick":
        args.cases = QUICK_CASES
    return args


class Tool:
    """The tool chosen for the run: wstest's command or kosoku's Python."""

    def __init__(self, wstest: list[str] | None, kosoku: Path | None, why: str, label: str) -> None:
        self.wstest = wstest
        self.kosoku = kosoku
        self.why = why
        self.label = label  # for the summary, with the mode named per target

    def describe(self, client_target: bool) -> str:
        if self.wstest is not None:
            return self.label.format(mode="fuzzingserver" if client_target else "fuzzingclient")
        return self.label.format(mode="server" if client_target else "client")


def choose_tool(args: argparse.Namespace) -> Tool:
    name, version = AUTOBAHN
    on_py3 = (
        f"`{name}` {version} is Python 2.7 code: in a Python 3 virtual environment"
        f" its `wstest` stops at once ({AUTOBAHN_ON_PY3})"
    )
    wstest: list[str] | None = None
    why_not = ""
    if args.tool in ("auto", "autobahntestsuite"):
        python2, found = find_python2(args.python2)
        try:
            if python2 is None:
                raise CannotRun(f"no Python 2.7 interpreter was found ({found})")
            wstest = ensure_autobahn(python2)
        except CannotRun as exc:
            if args.tool == "autobahntestsuite":
                raise
            why_not = str(exc)
            say(f"the Autobahn TestSuite cannot run: {why_not}; using kosoku")
    if wstest is not None:
        label = f"Autobahn TestSuite `{name}` {version} (`wstest -m {{mode}}`) under Python {found}"
        why_tool = (
            f"The Autobahn TestSuite itself ran. {on_py3}, so it runs under the Python"
            f" 2.7 found at `{python2}`, installed by that interpreter's pip into"
            f" `{AUTOBAHN_DIR.relative_to(ROOT)}/`. Where no Python 2.7 exists (Debian 12"
            f" packages none), the runner uses kosoku {KOSOKU[1]}, a Python 3 runner of"
            " the same case files (`--tool kosoku` forces it)."
        )
        return Tool(wstest, None, why_tool, label)
    kosoku = ensure_tool(*KOSOKU)
    label = (
        f"kosoku {KOSOKU[1]} (PyPI `kosoku`, a fuzzing {{mode}} that runs the Autobahn"
        " TestSuite's own case files) through `tests/conformance/kosoku_driver.py`"
    )
    why_tool = f"kosoku ran because `--tool kosoku` was given. {on_py3}."
    if why_not:
        why_tool = f"kosoku ran, not the Autobahn TestSuite. {on_py3}, and here: {one_line(why_not)}."
    return Tool(None, kosoku, why_tool, label)


def server_log_note(proc: subprocess.Popen[bytes] | None, log_path: Path, name: str, note: str) -> str:
    """What went wrong with an echo server, from its exit status and log."""
    code = proc.returncode if proc is not None else None
    if not note and code not in (0, None):
        note = f"{name} exited with status {code} when stopped with SIGTERM"
    logged = log_path.read_text(errors="replace").splitlines()
    expected = ("shutting down",)
    extra = [
        line
        for line in logged
        if "listening on" not in line and line.strip() not in expected and not line.startswith("tls: ")
    ]
    if extra:
        where = log_path.relative_to(ROOT)
        say(f"the server logged {len(extra)} other line(s), see {where}:\n{tail(chr(10).join(extra), 20)}")
        note = "; ".join(filter(None, [note, f"it logged {len(extra)} unexpected line(s)"]))
    return note


def tls_negotiated(log_path: Path, cases: int) -> tuple[str, str]:
    """(what the server's connections negotiated, problems): from the line
    ``tls: ...`` that examples/echo.py --certfile prints when it stops."""
    found = re.findall(r"^tls: (.*)$", log_path.read_text(errors="replace"), re.MULTILINE)
    if not found:
        return "", "examples/echo.py --certfile printed no `tls:` line when stopped"
    counted = sum(int(n) for n in re.findall(r" on (\d+) connections", found[-1]))
    if counted < cases:
        return found[-1], f"{counted} TLS connection(s) reached the echo for {cases} case(s)"
    return found[-1], ""


def run_server_target(target: str, tool: Tool, out: Path, cases: str) -> tuple[float, str]:
    """The tool's fuzzing client against examples/echo.py: (seconds, problems)."""
    log_path = BUILD / f"{target}.log"
    options: tuple[str, ...] = {
        "relay": ("--relay",),
        "uvicorn": ("--uvicorn",),
        "server-tls": ("--certfile", str(TLS_CERT), "--keyfile", str(TLS_KEY)),
    }.get(target, ())
    name = "examples/echo.py" + (" --certfile" if target == "server-tls" else "".join(f" {o}" for o in options))
    children: list[subprocess.Popen[bytes]] = []
    server: subprocess.Popen[bytes] | None = None
    note = ""
    try:
        if target == "server-tls":
            ensure_certificate()
        server, url = start_server(log_path, children, options)
        if target == "server-tls" and not url.startswith("wss://"):
            raise CannotRun(f"{name} listens on {url}, not on wss://")
        say(f"{name} at {url} (pid {server.pid}, log {log_path.relative_to(ROOT)})")
        say(f"running cases {brief(cases)}{excluding()} with {'wstest' if tool.wstest else 'kosoku'}")
        t_cases = time.monotonic()
        if tool.wstest is not None:
            status = run_wstest(tool.wstest, url, out, cases, children)
        else:
            assert tool.kosoku is not None
            status = run_kosoku(tool.kosoku, url, out, cases, children)
        seconds = time.monotonic() - t_cases
        if status != 0:
            raise CannotRun(f"the tool exited with status {status}")
        crashed = server.poll()
        if crashed is not None:
            note = f"{name} exited with status {crashed} during the run"
    finally:
        # The tool first, so that the server is not stopped under a live case.
        for child in reversed(children):
            stop(child)
    return seconds, server_log_note(server, log_path, name, note)


def run_target(target: str, tool: Tool, args: argparse.Namespace, command: str) -> bool | None:
    """Runs one target and writes its record; True when every case passed,
    None when the target was skipped (server-tls under kosoku)."""
    if target == "server-tls" and tool.kosoku is not None:
        why = f"kosoku cannot connect to wss:// ({KOSOKU_NO_WSS}); the Autobahn TestSuite (Python 2.7) can"
        if args.target == target:
            raise CannotRun(f"server-tls: {why}")
        say(f"--- target {target} skipped: {why}")
        return None
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    out: Path = args.out.resolve() / target
    out.mkdir(parents=True, exist_ok=True)
    clear_report(out)
    say(f"--- target {target}")
    if target in ("server", "server-tls", "relay", "uvicorn"):
        seconds, note = run_server_target(target, tool, out, args.cases)
    else:
        seconds, note = run_client_target(target, tool, out, args.cases)
    entries, details = read_results(out)
    tls = ""
    if target == "server-tls":
        tls, problem = tls_negotiated(BUILD / f"{target}.log", len(entries))
        note = "; ".join(filter(None, [note, problem]))
        say(f"{target}: the server's TLS connections: {tls or 'none'}")
    full = args.cases == DEFAULT_CASES
    dest = RECORDS / target if full else out
    dest.mkdir(parents=True, exist_ok=True)
    client = target.startswith("client")
    write_record(
        dest, out, entries, details, tool.describe(client), tool.why, command, started, seconds, note, target, tls
    )
    failing = [c for c, e in entries.items() if not passed(c, e)]
    for case_id in failing:
        e = entries[case_id]
        say(f"{target}: did not pass: {case_id} {e['behavior']} / close {e['behaviorClose']}")
    say(
        f"{target}: {len(entries) - len(failing)} of {len(entries)} cases passed; cases {seconds:.0f} s, "
        f"whole target {time.monotonic() - t0:.0f} s"
    )
    say(f"{target}: report {out}/index.html; summary {dest / 'summary.md'}; results {dest / 'results.json'}")
    if note:
        say(f"{target}: {note}")
    return not failing and not note


def main() -> int:
    args = parse_args()
    t0 = time.monotonic()
    command = shlex.join(["python3", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]])
    BUILD.mkdir(parents=True, exist_ok=True)
    tool = choose_tool(args)
    ensure_built()
    targets = list(TARGETS) if args.target == "all" else [args.target]
    ok = {target: run_target(target, tool, args, command) for target in targets}
    for target, good in ok.items():
        verdict = {True: "every case passed", False: "NOT every case passed", None: "skipped (kosoku: no wss://)"}
        say(f"{target:<13} {verdict[good]}")
    say(f"whole run {time.monotonic() - t0:.0f} s")
    return 0 if all(good is not False for good in ok.values()) else 1


def on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through main's finally


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        sys.exit(main())
    except CannotRun as exc:
        print(f"conformance: cannot run: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("conformance: interrupted; server and tool stopped", file=sys.stderr)
        sys.exit(130)
