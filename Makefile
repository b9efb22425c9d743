# multinic — make demo | make test | make bench | make soak | make binary
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The venv's interpreter: Debian's python3.11 when the system has it (system-deps installs it), else
# the real interpreter behind pyenv's shim (the shim costs ~150 ms per start). Debian's build is
# statically linked and PGO+LTO-optimised; pyenv's default build links libpython3.11.so without
# PGO. Measured side by side on this machine kind: an empty `python -I -S` starts ≈ 2.5 ms sooner
# and pure-Python loops run ≈ 1.5× faster — every thin exec, the shim and the daemon feel it
# (README, Performance). Deferred (`?=`), so it is read after system-deps ran.
PYTHON ?= $(shell if [ -x /usr/bin/python3.11 ]; then echo /usr/bin/python3.11; \
                  else python3 -c 'import sys; print(sys.executable)' 2>/dev/null || echo python3; fi)
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := iproute2 iputils-ping containernetworking-plugins iptables nftables conntrack \
                etcd-server etcd-client user-mode-linux kmod podman runc busybox-static openssl containerd curl \
                python3.11 python3.11-venv libpython3.11
STAMP_SYS := .venv/.system-deps
STAMP_PY  := .venv/.python-deps

.PHONY: help system-deps venv demo test test-unit test-fast bench bench-ipam soak binary podman-e2e cri-e2e lint typecheck clean

help:
	@echo "make demo   - build the multi-NIC demo scene on this machine (root) and clean it up"
	@echo "make test   - install what is needed and run the whole test suite (root)"
	@echo "make bench  - benchmarks against the reference Go plugins (ratios)"
	@echo "make bench-ipam - whereabouts at scale: 8 nodes x 125 pods x 2 attachments, etcd and API double"
	@echo "make soak   - long reliability and fuzzing runs"
	@echo "make binary - single executable with PyInstaller"
	@echo "make cri-e2e - the whole containerd (CRI) end-to-end suite, slow tests included (root)"

$(STAMP_SYS):
	@mkdir -p $(VENV)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

system-deps: $(STAMP_SYS)

$(STAMP_PY): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,dev]' --config-settings editable_mode=compat
	@touch $@

venv: $(STAMP_PY)

demo: system-deps venv
	$(VENV)/bin/multinic demo

test: system-deps venv
	$(PY) -m pytest -q -m "not slow" tests

test-unit: venv
	$(PY) -m pytest -q tests/unit

bench: system-deps venv
	$(PY) -m tests.bench.run

bench-ipam: system-deps venv
	$(PY) -m tests.bench.whereabouts_scale

soak: system-deps venv
	$(PY) -m pytest -q -m slow tests

binary: venv
	$(VENV)/bin/pyinstaller --noconfirm --clean --distpath dist --workpath build packaging/multinic.spec
	@echo "dist/multinic/: multinic, multinic-shim, _internal/ (install: dist/multinic/multinic install --help)"

podman-e2e: system-deps venv
	$(PY) -m pytest -q tests/e2e/podman tests/e2e/test_binary.py tests/e2e/test_install.py

cri-e2e: system-deps venv
	$(PY) -m pytest -q tests/e2e/cri

lint: venv
	$(VENV)/bin/ruff check cni plugins ipam conformance tests

typecheck: venv
	$(VENV)/bin/mypy

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
