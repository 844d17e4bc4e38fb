# `make run`: set up .venv and run the pipeline on MovieLens 100k.
# `make test`: set up .venv and run the test suite on two pytest-xdist workers, one test
# file at a time each (a pipeline run keeps about one core busy; a file's tests share its
# fixtures), except that the files reading the shared pushed run go to one worker as one
# group, so that run is built once (tests/conftest.py, PUSHED_RUN_FILES), in the order
# tests/conftest.py collects them: that group, then files with pipeline runs, then the rest
# (--no-loadscope-reorder; xdist would otherwise start the groups with the most tests first).
# `make bench`: retrieval quality (split last with ablations, and random) vs baselines and
# ranking on ml-100k (re-ranker ablation), ScaNN at 1.68M candidates, serving latency (each
# stage, then whole requests), HTTP throughput and a 10-minute soak with a push a minute
# (prints figures; not part of `make test`).
# `make bench-scale`: the whole pipeline cold on synthetic 100k and 1M ratings, each
# component's seconds and peak memory (about 13 minutes; SIZES=100k,1m,10m adds the 10M run:
# 83 minutes on 2 cores, plus 8 to generate its data the first time).
PYTHON ?= $(shell command -v python3.10 2>/dev/null || echo $$HOME/.pyenv/versions/3.10.13/bin/python)
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): setup.py constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "pip==24.0"
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test]"
	$(VENV)/bin/pip check
	touch $(STAMP)

.PHONY: setup run test bench bench-scale
setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/movrec run $(if $(MOVIELENS_DATA_DIR),--data-dir $(MOVIELENS_DATA_DIR),)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

bench: $(STAMP)
	$(VENV)/bin/python -m bench.retrieval_quality --variants $(if $(MOVIELENS_DATA_DIR),--data-dir $(MOVIELENS_DATA_DIR),)
	$(VENV)/bin/python -m bench.retrieval_quality --split random $(if $(MOVIELENS_DATA_DIR),--data-dir $(MOVIELENS_DATA_DIR),)
	$(VENV)/bin/python -m bench.ranking_quality $(if $(MOVIELENS_DATA_DIR),--data-dir $(MOVIELENS_DATA_DIR),)
	$(VENV)/bin/python -m bench.index_scale
	$(VENV)/bin/python -m bench.serving_stages
	$(VENV)/bin/python -m bench.serving_latency --soak-minutes 10 --workers 2

SIZES ?= 100k,1m
bench-scale: $(STAMP)
	$(VENV)/bin/python -m bench.scale --sizes $(SIZES)
