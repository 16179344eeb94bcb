"""Build of roomcast's C extension, ``roomcast._core``.

Project metadata lives in pyproject.toml; this file only describes the
extension, because finding its C libraries needs code:

* libuv is found with ``pkg-config --cflags --libs libuv`` (Debian package
  ``libuv1-dev``);
* OpenSSL (TLS for ``wss://`` clients, random masking keys) with
  ``pkg-config --cflags --libs openssl`` (Debian package ``libssl-dev``);
* wslay is found by its header ``wslay/wslay.h`` and linked with ``-lwslay``
  (Debian package ``libwslay-dev``, which ships no pkg-config file);
* hiredis is found with ``pkg-config --cflags --libs hiredis`` (Debian
  package ``libhiredis-dev``) and its asynchronous API checked to link;
* libdeflate (permessage-deflate's messages that stand alone) with
  ``pkg-config --cflags --libs libdeflate`` (Debian package
  ``libdeflate-dev``) and zlib (a peer's stream that keeps its context) with
  ``pkg-config --cflags --libs zlib`` (Debian package ``zlib1g-dev``).

When one is missing the build stops with a message naming the Debian
packages to install, instead of a compiler error about a missing header.

Developer switches (environment variables, read at build time):

``ROOMCAST_WERROR=1``
    add ``-Werror``: every warning fails the build (``make build`` and CI).
``ROOMCAST_SANITIZE=1``
    build with AddressSanitizer and UndefinedBehaviorSanitizer
    (``-O1 -g -fsanitize=address,undefined``). The interpreter must then be
    started with the ASan runtime preloaded; ``make sanitize`` does that.

Switching a flag does not make setuptools rebuild an extension that is up to
date: pass ``--force`` to ``build_ext`` (``make sanitize`` does).

The stable ABI: the extension is compiled with ``Py_LIMITED_API`` at 3.10
(``LIMITED_API`` below), so one ``cp310-abi3`` wheel serves CPython 3.10 and
every later version, and its file is ``_core.abi3.so``. A build removes any
other ``_core.*.so`` beside it, in build/lib.*/ and in place (an older
build's ``_core.cpython-311-...so`` would otherwise be shipped in a wheel, or
imported first).
"""

import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import setuptools
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

# pyproject.toml's `license = "MIT"` and `license-files` (PEP 639) need
# setuptools 77; an older one stops with a schema error that does not say so.
# pip and `python -m build` fetch a new one themselves (build-system.requires);
# this is for `setup.py build_ext --inplace` (make build) with the
# interpreter's own.
if int(setuptools.__version__.split(".")[0]) < 77:
    sys.stderr.write(
        "\nerror: building roomcast needs setuptools>=77 (PEP 639 licence metadata); "
        "this interpreter has %s.\n%s -m pip install 'setuptools>=77' (make deps-python does).\n\n"
        % (setuptools.__version__, os.path.basename(sys.executable))
    )
    raise SystemExit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
# The oldest CPython the stable-ABI extension runs on (requires-python).
LIMITED_API = ("0x030A0000", "cp310")
INSTALL_HINT = (
    "On Debian or Ubuntu: apt-get install libuv1-dev libwslay-dev libssl-dev "
    "libhiredis-dev libdeflate-dev zlib1g-dev pkg-config\n"
    "(or run `make deps` as root, which installs them)."
)


class MissingDependency(Exception):
    pass


def _env_flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _pkg_config_flags(package, debian):
    """Returns (compile_args, link_args) for package from pkg-config."""
    pkg_config = os.environ.get("PKG_CONFIG", "pkg-config")
    if shutil.which(pkg_config) is None:
        raise MissingDependency(
            "roomcast needs pkg-config to find %s, and pkg-config is not installed.\n%s" % (package, INSTALL_HINT)
        )
    try:
        out = subprocess.run(
            [pkg_config, "--cflags", "--libs", package],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except subprocess.CalledProcessError:
        raise MissingDependency(
            "roomcast needs %s (Debian package %s), and `pkg-config --cflags "
            "--libs %s` does not find it (no %s.pc on PKG_CONFIG_PATH).\n%s"
            % (package, debian, package, package, INSTALL_HINT)
        ) from None
    flags = shlex.split(out)
    cflags = [f for f in flags if not f.startswith(("-l", "-L", "-Wl,"))]
    ldflags = [f for f in flags if f.startswith(("-l", "-L", "-Wl,"))]
    return cflags, ldflags


def _libuv_flags():
    return _pkg_config_flags("libuv", "libuv1-dev")


def _hiredis_flags(compiler_cmd):
    """Returns (compile_args, link_args) for hiredis; fails clearly unless
    its asynchronous API compiles and links."""
    cflags, ldflags = _pkg_config_flags("hiredis", "libhiredis-dev")
    probe = (
        "#include <hiredis/async.h>\n"
        "int main(void) {\n"
        '  redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", 1);\n'
        "  if (ac != NULL) redisAsyncFree(ac);\n"
        "  return 0;\n"
        "}\n"
    )
    if not _compiles_and_links(compiler_cmd, probe, cflags + ldflags):
        raise MissingDependency(
            "roomcast needs hiredis (hiredis/async.h, -lhiredis), and it does "
            "not compile and link here.\n" + INSTALL_HINT
        )
    return cflags, ldflags


def _compiles_and_links(compiler_cmd, source, extra_args):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        cmd = compiler_cmd + [src, "-o", os.path.join(tmp, "probe")] + extra_args
        result = subprocess.run(cmd, capture_output=True, text=True)
        return result.returncode == 0


def _check_wslay(compiler_cmd, cflags):
    """Fails clearly unless wslay's header and library are usable."""
    probe = (
        "#include <wslay/wslay.h>\n"
        "int main(void) {\n"
        "  struct wslay_event_callbacks cb = {0};\n"
        "  wslay_event_context_ptr ctx;\n"
        "  if (wslay_event_context_server_init(&ctx, &cb, 0) != 0) return 1;\n"
        "  wslay_event_context_free(ctx);\n"
        "  return 0;\n"
        "}\n"
    )
    if _compiles_and_links(compiler_cmd, probe, cflags + ["-lwslay"]):
        return
    header = os.path.exists("/usr/include/wslay/wslay.h") or _compiles_and_links(
        compiler_cmd, "#include <wslay/wslay.h>\nint main(void){return 0;}\n", cflags + ["-c"]
    )
    what = "the library -lwslay" if header else "the header wslay/wslay.h"
    raise MissingDependency("roomcast needs wslay, and %s is not found.\n%s" % (what, INSTALL_HINT))


def _c_compiler():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cmd = shlex.split(cc)
    if shutil.which(cmd[0]) is None:
        raise MissingDependency(
            "roomcast needs a C compiler, and %r is not found.\nOn Debian or Ubuntu: apt-get install gcc" % cmd[0]
        )
    return cmd


class BuildExt(build_ext):
    """Checks the C dependencies before compiling, so that a missing package
    is reported by name rather than as a compiler error."""

    def build_extensions(self):
        try:
            uv_cflags, uv_ldflags = _libuv_flags()
            ssl_cflags, ssl_ldflags = _pkg_config_flags("openssl", "libssl-dev")
            _check_wslay(_c_compiler(), uv_cflags)
            hi_cflags, hi_ldflags = _hiredis_flags(_c_compiler())
            ld_cflags, ld_ldflags = _pkg_config_flags("libdeflate", "libdeflate-dev")
            z_cflags, z_ldflags = _pkg_config_flags("zlib", "zlib1g-dev")
        except MissingDependency as exc:
            sys.stderr.write("\nerror: %s\n\n" % exc)
            raise SystemExit(1) from None

        cflags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-pthread"]
        ldflags = ["-lwslay", "-pthread"]
        if _env_flag("ROOMCAST_WERROR"):
            cflags.append("-Werror")
        if _env_flag("ROOMCAST_SANITIZE"):
            san = [
                "-fsanitize=address,undefined",
                "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=undefined",
            ]
            # Later flags win: -O1 -g replace the -O2 above for sanitized runs.
            cflags += ["-O1", "-g"] + san
            ldflags += san
        for ext in self.extensions:
            ext.extra_compile_args = (
                uv_cflags + ssl_cflags + hi_cflags + ld_cflags + z_cflags + cflags + list(ext.extra_compile_args)
            )
            ext.extra_link_args = (
                uv_ldflags + ssl_ldflags + hi_ldflags + ld_ldflags + z_ldflags + ldflags + list(ext.extra_link_args)
            )
        super().build_extensions()

    def run(self):
        # setuptools builds in build/lib.*/ and then copies in place (inplace
        # is off during build_extensions). Both places may hold an older
        # build of another ABI: a wheel would ship it, an import prefer it.
        super().run()
        inplace = self.inplace
        try:
            for self.inplace in sorted({0, inplace}):
                for ext in self.extensions:
                    _remove_stale_builds(self.get_ext_fullpath(ext.name))
        finally:
            self.inplace = inplace


def _remove_stale_builds(built):
    """Removes the other builds of one extension beside the in-place one:
    the import system would prefer ``_core.cpython-311-...so`` to the
    ``_core.abi3.so`` just built."""
    stem = os.path.basename(built).split(".", 1)[0]
    for other in glob.glob(os.path.join(os.path.dirname(built), stem + ".*.so")):
        if os.path.abspath(other) != os.path.abspath(built):
            os.remove(other)


def _sources():
    # Sorted so that the build is the same from one machine to the next.
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", "*", "*.c")))


def _headers():
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", "*", "*.h")))


setup(
    package_dir={"": "python"},
    packages=find_packages("python"),
    package_data={"roomcast": ["py.typed", "_core.pyi", "static/*.js"]},
    include_package_data=False,
    ext_modules=[
        Extension(
            "roomcast._core",
            sources=_sources(),
            include_dirs=["csrc/include", "csrc"],
            define_macros=[("Py_LIMITED_API", LIMITED_API[0])],
            py_limited_api=True,
            # Headers as dependencies: a changed header rebuilds the module.
            depends=_headers(),
        )
    ],
    cmdclass={"build_ext": BuildExt},
    options={"bdist_wheel": {"py_limited_api": LIMITED_API[1]}},
    zip_safe=False,
)
