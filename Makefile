# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv when missing).
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: venv demo test bench clean
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt evaluation/requirements.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: venv
	$(VPY) process.py --demo

test: venv
	$(VPY) -m pytest -q test evaluation/tests

clean:
	rm -rf $(VENV) demo_output
