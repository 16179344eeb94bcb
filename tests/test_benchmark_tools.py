"""The benchmark's own tools stay honest: the load generator and the C floor
server build with -Werror, and a small fan-out through roomcast and through
the floor completes with every message delivered, in order, to every client.
(Speed is measured in benchmarks/, never here.)"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import run as bench  # noqa: E402  (benchmarks/run.py)


@pytest.fixture(scope="module")
def loadgen():
    return bench.build_loadgen()


def start(cmd, env=None):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, text=True)
    deadline = time.monotonic() + 30
    line = ""
    while "listening" not in line:
        assert time.monotonic() < deadline, "the server did not start"
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "the server exited"
    return proc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fan_out(loadgen, port, pid, window):
    out = subprocess.run(
        [str(loadgen), "--port", str(port), "--clients", "50", "--messages", "100",
         "--size", "64", "--window", str(window), "--server-pid", str(pid),
         "--json", "--timeout", "60"],
        capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["ok"], out.stderr
    assert result["deliveries"] == 50 * 100
    assert result["order_errors"] == 0 and result["lost"] == 0
    return result


@pytest.mark.parametrize("window", [1, 16])
def test_roomcast_chat_server_delivers_everything(loadgen, window):
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO / "python")]))
    proc = start([sys.executable, str(REPO / "benchmarks/servers/roomcast_chat.py"), str(port)], env)
    try:
        fan_out(loadgen, port, proc.pid, window)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("mode", ["write", "writev"])
def test_floor_server_delivers_everything(loadgen, mode):
    floor = bench.build_floor()
    port = free_port()
    proc = start([str(floor), str(port), "--mode", mode])
    try:
        fan_out(loadgen, port, proc.pid, 16)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_shared_room_across_servers_delivers_everything(loadgen, redis_server):
    """The cross-server benchmark's set-up: the load generator spreads its
    clients over three servers sharing a room through Redis (--ports)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO / "python")]))
    ports = [free_port() for _ in range(3)]
    procs = [start([sys.executable, str(REPO / "benchmarks/servers/roomcast_chat.py"), str(port),
                    redis_server.url], env) for port in ports]
    try:
        out = subprocess.run(
            [str(loadgen), "--ports", ",".join(map(str, ports)), "--clients", "30", "--messages", "100",
             "--window", "8", "--json", "--timeout", "60"],
            capture_output=True, text=True, timeout=120)
        result = json.loads(out.stdout)
        assert out.returncode == 0 and result["ok"], out.stderr
        assert result["deliveries"] == 30 * 100
        assert result["order_errors"] == 0 and result["lost"] == 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
