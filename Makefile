# Liveprop. Every target creates .venv first if it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)

.PHONY: setup run test bench clean

setup: $(STAMP)

# visdom 0.2.4 is an sdist whose setup.py imports pkg_resources: build it with setuptools<81,
# without build isolation. The Visdom page's browser assets come from the npm registry.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools==80.10.2 wheel
	$(PY) -m pip install -q --no-build-isolation -r requirements.txt
	@$(PY) scripts/visdom_assets.py .cache/visdom || echo "warning: Visdom's page assets are missing (needs npm); its data API still works"
	@rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(PY) -m dashboard

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench_engine.py
	@test ! -f bench/bench_visdom.py || $(PY) bench/bench_visdom.py
	@test ! -f bench/bench_dashboard.py || $(PY) bench/bench_dashboard.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
