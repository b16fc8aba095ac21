# kdtune: the two quick-start commands.
#   make run    installs what is missing, then runs the main job (offline digits search)
#   make test   installs what is missing, then runs the test suite
# The venv lives outside the clone so fresh clones reuse it; override with VENV=...
VENV ?= $(HOME)/.venvs/kdtune
PY := $(VENV)/bin/python
# Re-install when setup.cfg changes or the clone moves (the editable install points at it).
STAMP := $(VENV)/.kdtune-$(shell cat setup.cfg | sha1sum | cut -c1-10)-$(shell echo $(CURDIR) | sha1sum | cut -c1-10)
ARGS ?=
# Test processes (pytest-xdist). Most of a Ray end-to-end test is waiting (Ray start-up, trial
# actors, Tune's polling), so 2 workers overlap those waits on a 2-core machine. Tests sharing
# the session's finished search run on one worker (tests/conftest.py). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2

.PHONY: run test install

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# setuptools' default editable mode: an import hook maps kdtune.<folder> to this clone's
	# folders (setup.cfg package_dir), so nothing but `kdtune` is importable from the install.
	# That mode ends with an informational note ("Editable installation. Please be careful with
	# folders ... of the same name as your package"), which pip >= 25 prints as a warning on every
	# install; the filter drops that one note (kdtune/ is the package itself), nothing else.
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e '.[test]'
	# The venv's one editable install now points at this clone: the other clones' stamps go, so
	# `make` in one of them installs again instead of running against this clone's code.
	rm -f $(VENV)/.kdtune-*
	touch $@

run: $(STAMP)
	$(PY) search/run_kd_search.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(ARGS)
