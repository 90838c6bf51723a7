# Two commands from a fresh clone (each sets up .venv first if needed, then says where results are):
#   make demo   # AlexNet on scikit-learn's digits, offline: summary, drawing, training curves, weights
#   make test   # the test suite less the tests marked slow (about 2 minutes on 2 idle cores)
#   make check  # what CI runs (.ci/run): ruff, mypy and every test, slow ones included
# Options: make demo ARGS="--epochs 2"; VENV=path to use another virtual environment.

VENV ?= .venv
PY := $(VENV)/bin/python
# The install is redone when pyproject.toml changes (its hash names the stamp file).
STAMP := $(VENV)/.installed-$(shell python3 -c "import hashlib; print(hashlib.sha1(open('pyproject.toml','rb').read()).hexdigest()[:12])")
SPEC := arch_specs/alexnet_digits.yaml
ARGS ?=

.PHONY: setup demo test test-all lint check

setup: $(STAMP)

$(STAMP):
	@echo "setting up $(VENV): torch, torchvision and the rest (about 6 GB and a few minutes the first time)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: setup
	@mkdir -p runs
	$(PY) -m builder summarize $(SPEC)
	$(PY) -m builder draw $(SPEC) -o runs/alexnet_digits.png --force
	$(PY) -m builder train $(SPEC) $(ARGS)
	@echo "demo done: the drawing is runs/alexnet_digits.png; the run (summary.txt, metrics.csv, curves.png, model.safetensors) is the newest runs/alexnet_digits-* directory named above"

test: setup
	$(PY) -m pytest -q -m "not slow"
	@echo "tests done (slow ones skipped: make test-all runs them); see the summary line above"

test-all: setup
	$(PY) -m pytest -q
	@echo "all tests done; see the summary line above"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no tests: make fails on it like on any other non-zero status.
check: lint test-all
