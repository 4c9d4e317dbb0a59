# Two set-up commands for a new user (see README):
#   make demo   — install into .venv and open napari on the synthetic sample
#   make test   — install (incl. Debian packages for Xvfb + Mesa GL) and run the whole test suite headless
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch: where this machine carries the CPU wheel (CI, our dev machines) take it; elsewhere pip
# picks the build for your platform (CUDA on Linux, MPS on macOS). Override with TORCH_SPEC=...
TORCH_SPEC ?= $(shell ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 && echo 'torch==2.13.0' || echo 'torch>=2.2')
APT_PACKAGES := xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
	libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
	libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1
PYTEST_ARGS ?=

.PHONY: demo test venv sysdeps sample bench screenshot clean

$(VENV)/.stamp-%: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$*]"
	touch $@

venv: $(VENV)/.stamp-qt,export

demo: $(VENV)/.stamp-qt,export
	$(VENV)/bin/napari-inrst demo

sysdeps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

test: sysdeps $(VENV)/.stamp-testing
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m pytest -q -ra $(PYTEST_ARGS)

sample: $(VENV)/.stamp-qt,export
	$(PY) scripts/make_sample_data.py sample_data

bench: $(VENV)/.stamp-testing
	$(PY) benchmarks/run.py --quick

screenshot: sysdeps $(VENV)/.stamp-testing
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) scripts/make_screenshot.py docs/screenshot.png

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
