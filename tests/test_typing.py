"""The typed surface: the package, its ``_core.pyi`` stub and the demo pass
``mypy --strict``, so users who type-check their handlers get real types."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_package_and_demo_pass_mypy_strict():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "python/roomcast", "examples/chat.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stub_names_match_the_compiled_module():
    """Every public name of the compiled module is in the stub and the other
    way round, so the stub cannot drift from the binding."""
    import ast

    from roomcast import _core

    stub = ast.parse((REPO / "python/roomcast/_core.pyi").read_text())
    names = set()
    methods = set()
    for node in stub.body:
        if isinstance(node, ast.ClassDef) and node.name == "Core":
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    runtime = {n for n in dir(_core) if not n.startswith("_")}
    assert runtime == names
    runtime_methods = {n for n in dir(_core.Core) if not n.startswith("_")}
    assert runtime_methods == methods - {"__init__"}
