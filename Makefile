# Two entry points (see README): `make test` and `make book`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install -q
# The pins installed outside simflib's extras live in pyproject.toml ([tool.simflib.pins]; why each, there).
pin = $(shell $(PYTHON) -c 'import tomllib, sys; p = tomllib.load(open("pyproject.toml", "rb"))["tool"]["simflib"]["pins"][sys.argv[1]]; print(p if isinstance(p, str) else " ".join(p))' $(1))
TORCH := $(call pin,torch)
NO_DEPS := $(call pin,embedded)
PEERS := $(call pin,peers)

.PHONY: install test test-fast lint book book-smoke book-student check-html bench runs notebooks-branch clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e ".[test,book,train]"
	$(PIP) --no-deps $(NO_DEPS)
	$(PIP) --no-deps $(PEERS)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --ignore=tests/html

# The quick suite (no model training or loading): under a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q --ignore=tests/html -m "not slow"

# Lint, format and type checks of the package, and the chapters' code formatted to the page (CI runs them).
lint: $(STAMP)
	$(BIN)/ruff check simflib
	$(BIN)/ruff format --check simflib
	$(BIN)/mypy
	$(BIN)/python -m simflib.book format --check

book: $(STAMP)
	$(BIN)/python -m simflib.book build

book-smoke: $(STAMP)
	$(BIN)/python -m simflib.book build --smoke

# The built book as a reader sees it (headless Chromium screenshots, no errors, images, tables).
check-html: $(STAMP)
	$(BIN)/python -m pytest -q tests/html

# Student edition: exercise solutions hidden; re-uses the chapters `make book` executed (execution cache).
book-student: $(STAMP)
	$(BIN)/python -m simflib.book build --student

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_collect.py
	$(BIN)/python benchmarks/bench_gradients.py
	$(BIN)/python benchmarks/bench_memory.py

# The launch buttons open the chapters as notebooks from the `notebooks` branch: main plus book/*.ipynb (no
# outputs, a setup cell first). This commits them to that local branch; publish it with `git push origin notebooks`.
notebooks-branch: $(STAMP)
	rm -rf _build/notebooks-branch && git worktree prune
	git worktree add -f -B notebooks _build/notebooks-branch HEAD
	$(BIN)/python -m simflib.book notebooks --out _build/notebooks-branch/book
	cd _build/notebooks-branch && git add -f book/*.ipynb && git commit -qm "Chapters as notebooks, from $$(git rev-parse --short HEAD)"
	git worktree remove --force _build/notebooks-branch

# Record the committed settings' runs (hours on 2 cores; resumable: rerun to continue).
runs: $(STAMP)
	for s in $$($(BIN)/python -c 'import simflib.collect as c; print(*c.DEFAULT_SETTINGS)'); do \
		$(BIN)/python -m simflib collect --setting $$s || exit 1; done

clean:
	rm -rf _build
