"""The distribution a user installs: `make wheel`'s repaired manylinux wheel
and its sdist.

* The wheel's metadata is complete and its one version is the package's.
* Installed into a fresh virtual environment and run as root inside a mount
  namespace (``unshare -m``) in which the system's libuv, wslay, hiredis,
  libdeflate, libssl and libcrypto are hidden (an empty file bind-mounted over
  each), it imports roomcast from that environment and fans a message out
  to two clients (tests/support/wheel_probe.py); the unrepaired extension
  fails to load there, which shows that the hiding works. Skipped, with the
  reason, when not root or when unshare cannot make a namespace.
* The sdist holds the C sources and headers, and building it where a C
  library cannot be found stops with setup.py's message naming the Debian
  package.

`make wheel` rebuilds only when a file the wheel is made of changed (its
first run installs the packaging tools into build/wheel-tools/ and needs
the network, as the isolated build does for setuptools).
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "support" / "wheel_probe.py"
# The libraries the wheel carries in roomcast.libs/ (auditwheel leaves zlib
# and glibc to the system: every manylinux system has them).
BUNDLED = ("libuv", "libwslay", "libhiredis", "libdeflate", "libssl", "libcrypto")
# The environment of the packaging commands and of the installed wheel,
# without `make test`'s PYTHONPATH=python (the source tree) and `make
# sanitize`'s AddressSanitizer runtime (the wheel is a normal build).
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")
}


def _interpreters():
    """This interpreter, and one of each other CPython from 3.10 to 3.13 found
    as python3.X on PATH or under pyenv's versions: the abi3 wheel must serve
    every one."""
    found = {"%d.%d" % sys.version_info[:2]: sys.executable}
    pyenv_versions = os.path.join(os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv")), "versions")
    for minor in ("3.10", "3.11", "3.12", "3.13"):
        if minor in found:
            continue
        candidates = [shutil.which("python" + minor)]
        candidates += sorted(glob.glob(os.path.join(pyenv_versions, minor + ".*", "bin", "python" + minor)))
        for exe in filter(None, candidates):
            check = subprocess.run(
                [exe, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
            )
            if check.returncode == 0 and check.stdout.strip() == minor:
                found[minor] = exe
                break
    return sorted(found.items())


INTERPRETERS = _interpreters()


def _version():
    text = (ROOT / "python" / "roomcast" / "_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


@pytest.fixture(scope="module")
def built():
    """Runs `make wheel` (a no-op when the wheel is up to date); returns the
    repaired wheel, the unrepaired one and the sdist."""
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "wheel", "PYTHON=" + sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail("make wheel failed:\n" + result.stdout[-4000:] + result.stderr[-4000:])
    repaired = Path((ROOT / "build" / "wheel" / "repaired.txt").read_text().strip())
    (raw,) = glob.glob(str(ROOT / "build" / "wheel" / "raw" / "*.whl"))
    (sdist,) = glob.glob(str(ROOT / "build" / "wheel" / "raw" / "*.tar.gz"))
    return repaired, Path(raw), Path(sdist)


def test_wheel_is_manylinux_with_complete_metadata(built):
    repaired, _, _ = built
    version = _version()
    # One wheel for CPython 3.10 and later (the stable ABI), manylinux.
    assert re.fullmatch(r"roomcast-%s-cp310-abi3-manylinux_2_\d+_x86_64\.whl" % re.escape(version), repaired.name)
    with zipfile.ZipFile(repaired) as whl:
        names = whl.namelist()
        info = "roomcast-%s.dist-info/" % version
        meta = whl.read(info + "METADATA").decode()
        entry_points = whl.read(info + "entry_points.txt").decode()
        assert info + "licenses/LICENSE" in names
        assert whl.read(info + "licenses/LICENSE").startswith(b"MIT License")
    libs = [n.split("/", 1)[1] for n in names if n.startswith("roomcast.libs/") and n != "roomcast.libs/"]
    for lib in BUNDLED:
        assert any(n.startswith(lib + "-") for n in libs), (lib, libs)
    # the stable-ABI extension, and no other build of it beside
    assert sorted(n for n in names if n.startswith("roomcast/_core")) == [
        "roomcast/_core.abi3.so",
        "roomcast/_core.pyi",
    ]
    assert "roomcast/py.typed" in names and "roomcast/static/roomcast.js" in names

    headers = {}
    for line in meta.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(": ")
        headers.setdefault(key, []).append(value)
    assert headers["Version"] == [version]
    assert headers["License-Expression"] == ["MIT"]
    assert headers["License-File"] == ["LICENSE"]
    assert headers["Requires-Python"] == [">=3.10"]
    assert headers["Description-Content-Type"] == ["text/markdown"]
    for minor in (10, 11, 12, 13):
        assert "Programming Language :: Python :: 3.%d" % minor in headers["Classifier"]
    urls = dict(u.split(", ", 1) for u in headers["Project-URL"])
    assert urls["Source"] == "https://github.com/roomcast/roomcast"
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues"}
    assert 'prometheus_client>=0.17; extra == "metrics"' in headers["Requires-Dist"]
    assert "# roomcast" in meta.split("\n\n", 1)[1]  # the README is the long description
    assert "roomcast = roomcast.cli:main" in entry_points


def _namespace_skip_reason():
    if not sys.platform.startswith("linux"):
        return "needs Linux mount namespaces"
    if os.geteuid() != 0:
        return "needs root to bind-mount over the system's libraries in a mount namespace (unshare -m)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux) to make a mount namespace"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "unshare -m cannot make a mount namespace here: " + probe.stderr.strip()
    return None


def _system_copies(raw_core):
    """The files of the system's libraries that the wheel bundles: those the
    unrepaired extension resolves to, and every copy ldconfig knows of."""
    found = set()
    ldd = subprocess.run(["ldd", str(raw_core)], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m and m.group(1).startswith(BUNDLED):
            found.add(os.path.realpath(m.group(2)))
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in cache.splitlines():
        m = re.match(r"\s*(\S+) \(.*\) => (/\S+)", line)
        if m and m.group(1).startswith(tuple(b + "." for b in BUNDLED)):
            found.add(os.path.realpath(m.group(2)))
    return sorted(found)


@pytest.mark.parametrize("minor, interpreter", INTERPRETERS, ids=[m for m, _ in INTERPRETERS])
def test_wheel_serves_with_the_system_libraries_hidden(built, tmp_path, minor, interpreter):
    reason = _namespace_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    repaired, raw, _ = built

    # -I everywhere: `make test`'s PYTHONPATH=python (the source tree, and
    # its egg-info, which pip would take for an installed roomcast) must not
    # be seen.
    venv = tmp_path / "venv"
    subprocess.run([interpreter, "-I", "-m", "venv", str(venv)], check=True, timeout=120, env=CLEAN_ENV)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-I", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(repaired)],
        check=True,
        timeout=120,
        env=CLEAN_ENV,
    )

    # The unrepaired extension: the one that needs the system's libraries.
    with zipfile.ZipFile(raw) as whl:
        (member,) = [n for n in whl.namelist() if re.fullmatch(r"roomcast/_core\..*\.so", n)]
        raw_core = Path(whl.extract(member, tmp_path / "raw"))
    hidden = _system_copies(raw_core)
    for lib in BUNDLED:
        assert any(os.path.basename(f).startswith(lib + ".") for f in hidden), (lib, hidden)

    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    load_raw = (
        "import importlib.machinery, importlib.util, sys\n"
        "loader = importlib.machinery.ExtensionFileLoader('roomcast._core', sys.argv[1])\n"
        "spec = importlib.util.spec_from_loader('roomcast._core', loader)\n"
        "importlib.util.module_from_spec(spec)\n"
    )
    script = tmp_path / "hidden.sh"
    script.write_text(
        "set -e\n"
        + "".join("mount --bind %s %s\n" % (empty, f) for f in hidden)
        + 'echo "--- raw"\n'
        + 'if "$1" -I -c "$2" "$3" 2>&1; then echo "raw: imported"; else echo "raw: refused"; fi\n'
        + 'echo "--- probe"\n'
        + 'cd "$4" && exec "$1" -I "$5" "$6"\n'
    )
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            str(script),
            str(python),
            load_raw,
            str(raw_core),
            str(tmp_path),
            str(PROBE),
            str(venv),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=CLEAN_ENV,
    )
    out = result.stdout + result.stderr
    raw_part, _, probe_part = out.partition("--- probe")
    # The hiding works: the extension built against the system's libraries
    # cannot load, and says which library it misses.
    assert "raw: refused" in raw_part, out
    assert re.search(r"lib(uv|wslay|hiredis|deflate|ssl|crypto)\S*\.so", raw_part), out
    # The wheel does not need them.
    assert result.returncode == 0, out
    assert "probe ok: roomcast %s from %s" % (_version(), os.path.realpath(venv)) in probe_part, out


def test_sdist_holds_the_c_sources(built):
    _, _, sdist = built
    version = _version()
    top = "roomcast-%s/" % version
    with tarfile.open(sdist) as tar:
        names = {n[len(top) :] for n in tar.getnames() if n.startswith(top)}
    in_tree = {str(p.relative_to(ROOT)) for p in ROOT.glob("csrc/*/*.[ch]")}
    assert in_tree and in_tree <= names, sorted(in_tree - names)
    assert {"csrc/include/rc_core.h", "csrc/binding/pybinding.c"} <= names
    for f in ("LICENSE", "README.md", "setup.py", "pyproject.toml", "PKG-INFO"):
        assert f in names
    for f in ("__init__.py", "_version.py", "_core.pyi", "py.typed", "static/roomcast.js"):
        assert "python/roomcast/" + f in names
    assert not any(n.startswith("tests/") or n.endswith(".so") for n in names)


def test_sdist_build_names_a_missing_library(built, tmp_path):
    """Built where pkg-config cannot find hiredis (a pkg-config that says so
    for hiredis and defers to the real one for the rest), the sdist stops
    with setup.py's message naming the Debian package."""
    _, _, sdist = built
    real = shutil.which("pkg-config")
    if real is None:
        pytest.skip("needs pkg-config")
    fake = tmp_path / "pkg-config"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = hiredis ] && exit 1; done\nexec %s "$@"\n' % real)
    fake.chmod(0o755)
    tools = ROOT / "build" / "wheel-tools" / "bin" / "python"
    env = dict(CLEAN_ENV, PKG_CONFIG=str(fake))
    result = subprocess.run(
        [str(tools), "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "out"), str(sdist)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "roomcast needs hiredis (Debian package libhiredis-dev)" in out, out
    assert not list((tmp_path / "out").glob("*.whl")) if (tmp_path / "out").exists() else True
