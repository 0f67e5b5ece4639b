# Liveprop. Every target creates .venv first if it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HASH    = $(shell cat $(1) | cksum | cut -d' ' -f1)
RUNTIME := $(VENV)/.runtime-$(call HASH,requirements.txt pyproject.toml)
TESTING := $(VENV)/.testing-$(call HASH,requirements.txt requirements-test.txt pyproject.toml)
FONT    := dashboard/static/fonts/COMPLETE

.PHONY: setup run test fault lint format bench clean

setup: $(RUNTIME) $(FONT)

# visdom 0.2.4 is an sdist whose setup.py imports pkg_resources: build it with setuptools<81,
# without build isolation. The project itself is installed editable (engine, dashboard and the
# `liveprop` command), so nothing needs sys.path or PYTHONPATH. The Visdom page's browser assets
# come from the npm registry.
$(RUNTIME): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools==80.10.2 wheel
	$(PY) -m pip install -q --no-build-isolation -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@$(PY) scripts/visdom_assets.py .cache/visdom || echo "warning: Visdom's page assets are missing (needs npm); its data API still works"
	@rm -f $(VENV)/.runtime-* && touch $@

# the lecture's Chinese comments in the code views: the slices of Noto Sans SC that hold them (npm registry)
$(FONT): $(RUNTIME) dashboard/lecture_cells.py scripts/cjk_font.py
	@$(PY) scripts/cjk_font.py || echo "warning: no CJK font for the lecture's Chinese comments (needs npm); they show as boxes"

$(TESTING): $(RUNTIME) $(FONT) requirements-test.txt
	$(PY) -m pip install -q --no-build-isolation -r requirements-test.txt
	@rm -f $(VENV)/.testing-* && touch $@

run: $(RUNTIME) $(FONT)
	$(PY) -m dashboard

# two pytest-xdist workers: most tests wait on processes they started (workers, torchrun, Streamlit, Chromium),
# so two keep both cores busy; each file stays in one worker, so a module's fixtures run once
TEST_WORKERS ?= 2
test: $(TESTING)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# the fault campaign: every case of tests/ marked fault, with its full number of trials, and one table; and the
# slow full checks (marked full) that make test leaves out
fault: $(TESTING)
	LIVEPROP_FAULT_FULL=1 $(PY) -m pytest -m "fault or full" -q

lint: $(TESTING)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(TESTING)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# the bench report, every figure a ratio against its anchor: bench/results/<machine>.json and .md (12-14 minutes
# on 2 CPUs). BENCH_ROUNDS=N, BENCH_QUICK=1 (a smoke test), BENCH_SECTIONS=engine,store,... (bench/report.py)
bench: $(TESTING)
	$(PY) bench/report.py

clean:
	rm -rf $(VENV) .cache .pytest_cache dashboard/static/fonts
