# Two entry points for a fresh machine with Python 3.11+ and make: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
TVENV := .venv-test

.PHONY: demo test sandbox bench lab lint clean reliability

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(TVENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(TVENV)
	$(TVENV)/bin/pip install -q --upgrade pip
	$(TVENV)/bin/pip install -q -e '.[test,dev]'
	touch $@

# Byte-compile our own package (an editable install is not compiled by pip): every kernel a run starts
# imports it, and with PYTHONDONTWRITEBYTECODE set (as on CI machines) nothing would ever be cached.
demo: $(VENV)/.stamp
	$(VENV)/bin/python -m compileall -q lib
	$(VENV)/bin/rollbook demo

# -n 4 on 2 cores: a test spends about half its time waiting (kernels, subprocesses, HTTP, held controllers);
# two workers left the CPUs half idle (measured: 590 s at -n 2, 418 s at -n 4, same 1289 tests).
# pytest rewrites every test module's asserts at collection, in every worker; with PYTHONDONTWRITEBYTECODE
# set (CI machines set it) nothing is cached and each of the four workers spends 6 CPU-s on it (2 with the
# cache). One collection first, with bytecode on, writes the cache the workers then read (only a cache:
# its output is dropped and its failure ignored, the real run reports any collection error).
# mypy (16 CPU-s from a fresh clone, one core) runs beside that collection and the tests' start, when the
# second core is mostly idle; its report is printed after the tests, and either failing fails `make test`.
test: $(TVENV)/.stamp
	$(TVENV)/bin/ruff check lib bench tests
	$(TVENV)/bin/python -m compileall -q lib
	@types=$$(mktemp); $(TVENV)/bin/mypy >$$types 2>&1 & mypy=$$!; \
	PYTHONDONTWRITEBYTECODE= $(TVENV)/bin/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null; \
	PYTHONDONTWRITEBYTECODE= $(TVENV)/bin/python -m pytest -n 4 --dist loadgroup -q -m "not slow"; tests=$$?; \
	wait $$mypy; typed=$$?; echo "mypy:"; cat $$types; rm -f $$types; \
	[ $$tests -eq 0 ] && [ $$typed -eq 0 ]

# docs/reliability.md: bad input, faults, the fault matrix (whole playbook runs, marked slow), secrets
reliability: $(TVENV)/.stamp
	$(TVENV)/bin/python -m compileall -q lib
	$(TVENV)/bin/python bench/reliability.py

sandbox: $(VENV)/.stamp
	$(VENV)/bin/python -m compileall -q lib
	$(VENV)/bin/rollbook sandbox

bench: $(TVENV)/.stamp
	$(TVENV)/bin/python -m compileall -q lib
	$(TVENV)/bin/python bench/read_model.py
	$(TVENV)/bin/python bench/runner.py

lab: $(VENV)/.stamp
	$(VENV)/bin/pip install -q -e '.[lab]'
	@echo "then: source .sandbox/env.sh && $(VENV)/bin/jupyter lab runbooks/   (--allow-root as root)"

lint: $(TVENV)/.stamp
	$(TVENV)/bin/ruff check lib bench tests
	$(TVENV)/bin/mypy

clean:
	rm -rf $(VENV) $(TVENV) .sandbox
