# pyrunc: everything from a fresh Debian 12 machine (as root) to a running container.
#   make demo    set up, then run a container through pyrunc
#   make test    set up, then run every test
# Set-up is idempotent: Debian packages that are missing, a virtual environment in .venv,
# and the project installed into it.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
DEBS := containerd runc busybox-static libcap-dev python3-venv python3-dev gcc
SOURCES := $(shell find shim oci protos examples -name '*.py' -o -name '*.proto') setup.cfg pyproject.toml

.PHONY: all deps venv install demo test test-drop-in test-cgroup2 unit integration lint protos bench soak clean

all: install

deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.deps: setup.cfg | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -q '.[dev,wasm]'
	touch $@

venv: $(VENV)/.deps

# A real (non-editable) install: containerd runs the shim binary from .venv/bin, where the
# launcher replaces pip's console script (the same entry point, started without `site`).
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	rm -rf build  # setuptools would install stale copies of modules removed since
	$(PY) -m pip install -q --no-deps --no-build-isolation --force-reinstall .
	$(PY) -m pyrunc.shim.launcher
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m tests.support.demo

# containerd 1.7 (Debian 13) and 2.x (Debian sid), extracted into .cache/, to test under them too.
OTHER_CONTAINERDS := .cache/containerd-trixie .cache/containerd-sid

.cache/containerd-%: | deps
	tests/support/fetch_containerd.sh $* $@

# The drop-in lane: pyrunc installed as containerd-shim-runc-v2, first on the private containerd's
# PATH, serving io.containerd.runc.v2 under each containerd: lifecycle, exec, tty, options,
# events and restarts (tests/support/names.py says how the tests see it).
DROP_IN_TESTS := $(addprefix tests/integration/test_,lifecycle.py exec.py terminal_logs.py \
	tty_exec.py task_api.py faults.py events.py errors.py drop_in.py)
DROP_IN_VERSIONS := 1.6 1.7 2.x

# Every lane: the host's (cgroup v1), the drop-in lane, then the cgroup v2 guest.
test: install $(OTHER_CONTAINERDS)
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory test-drop-in
	$(MAKE) --no-print-directory test-cgroup2

test-drop-in: install $(OTHER_CONTAINERDS)
	@failed=""; for v in $(DROP_IN_VERSIONS); do \
	  echo "== drop-in lane: pyrunc as containerd-shim-runc-v2 under containerd $$v"; \
	  PYRUNC_TEST_DROP_IN=1 PYRUNC_TEST_CONTAINERD=$$v $(PY) -m pytest -q \
	    $(DROP_IN_TESTS) -k 'not hundred_tty_execs' || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "drop-in lane failed under containerd:$$failed"; exit 1; fi

# The cgroup v2 lane: the integration tests in a Debian 12 virtual machine with systemd as PID 1
# on cgroup v2 (this machine is cgroup v1 without systemd). The guest image is built once into
# .cache/ (again when its package list, build script or setup.cfg change); see
# tests/guest/run_guest.py.
# CGROUP2_ARGS go to it, e.g. "--source HEAD", or "-- -v tests/integration/test_cgroup2.py".
GUEST_DEBS := qemu-system-x86 debootstrap e2fsprogs
CGROUP2_ARGS ?=

test-cgroup2: install
	@missing=""; for p in $(GUEST_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing; \
	fi
	$(PY) tests/guest/run_guest.py $(CGROUP2_ARGS)

unit: install
	$(PY) -m pytest -q tests/unit

integration: install $(OTHER_CONTAINERDS)
	$(PY) -m pytest -q tests/integration

lint: install
	$(VENV)/bin/ruff check shim oci tests bench examples
	$(VENV)/bin/mypy shim oci examples

protos: venv
	$(PY) protos/generate.py

bench: install
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q '.[bench]'
	$(PY) -m bench.run

# The soak (issue 10): 1000 `ctr run --rm` cycles, then 100 containers at once, through one
# private containerd, sampling the warm parent's and the shims' fds, threads and RSS; too long for
# `make test`, whose run deselects tests/soak unless PYRUNC_SOAK=1. Samples go to .cache/soak/.
soak: install
	PYRUNC_SOAK=1 $(PY) -m pytest -q tests/soak

clean:
	rm -rf $(VENV) build *.egg-info .cache
