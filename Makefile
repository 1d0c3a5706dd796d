# The README's commands. Each sets everything up first (a .venv, the project and its
# pinned dependencies, the Debian packages the PsychoPy window needs), then runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
XVFB   := xvfb-run -a -s "-screen 0 1024x768x24"
# PsychoPy writes ~/.psychopy3 and rewrites sys.path unless told not to.
RUNENV := PSYCHOPYNOPACKAGES=1 MPLBACKEND=Agg

.PHONY: demo test bench system-deps browser-deps clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all]'
	touch $(STAMP)

# Xvfb and an OpenGL driver for the PsychoPy window; libjack for psychtoolbox's keyboard;
# xdotool to press keys in the window test (tests/experiments/test_x_keys.py).
system-deps:
	@if ! command -v xvfb-run >/dev/null 2>&1 || ! command -v xauth >/dev/null 2>&1 || \
	    ! command -v xdotool >/dev/null 2>&1 || \
	    ! dpkg -s libgl1-mesa-dri libjack-jackd2-0 >/dev/null 2>&1; then \
	  echo "installing xvfb xauth xdotool libgl1-mesa-dri libjack-jackd2-0"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends xvfb xauth xdotool libgl1-mesa-dri libjack-jackd2-0; \
	fi

# Headless Chromium for the test that opens the HTML report (Debian's package).
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium; \
	fi

demo: $(STAMP) system-deps
	HOME=$${HOME:-/tmp} $(RUNENV) $(XVFB) $(BIN)/bubbles demo --out results/demo

test: $(STAMP) system-deps browser-deps
	home=$$(mktemp -d) && HOME=$$home $(RUNENV) $(XVFB) $(BIN)/python -m pytest

bench: $(STAMP) system-deps
	$(RUNENV) $(BIN)/python benchmarks/masks.py
	$(RUNENV) $(BIN)/python benchmarks/ci.py
	home=$$(mktemp -d) && HOME=$$home $(RUNENV) $(XVFB) $(BIN)/python benchmarks/session.py
	$(RUNENV) $(BIN)/python benchmarks/ann.py
	$(RUNENV) $(BIN)/python benchmarks/fmri.py
	$(RUNENV) $(BIN)/python benchmarks/compare_many.py
	$(RUNENV) $(BIN)/python benchmarks/trials.py

clean:
	rm -rf $(VENV) results .pytest_cache
