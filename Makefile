# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv when missing).
# Containers (need docker): make images | container-test | export, and eval-image | eval-test | eval-export.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# the one version source is interfaces/version.py (tags NAME:$(VERSION), OCI labels, process.py --version)
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' interfaces/version.py)

.PHONY: venv demo test clean version images container-test export eval-image eval-test eval-export mutation
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt evaluation/requirements.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: venv
	$(VPY) process.py --demo

test: venv
	$(VPY) -m pytest -q test evaluation/tests

version:
	@echo $(VERSION)

# algorithm images remind2reg-cet1 and remind2reg-t2, each also tagged :$(VERSION) (ALL=1 adds remind2reg)
images:
	./build.sh

# builds the images, runs them as the organisers and Grand Challenge do, checks the outputs
# (FAST=1: a lighter model config; SKIP_BUILD=1: reuse the built images)
container-test: venv
	PYTHON=$(CURDIR)/$(VPY) ./test.sh

# export/remind2reg-cet1.tar.gz and export/remind2reg-t2.tar.gz (both tags inside), from the built images
export:
	./export.sh export

eval-image:
	evaluation/build.sh remind2reg-eval

eval-test: venv
	PYTHON=$(CURDIR)/$(VPY) evaluation/test.sh

# builds the evaluation image and writes export/remind2reg-eval.tar.gz (both tags inside)
eval-export:
	mkdir -p export
	evaluation/export.sh remind2reg-eval export/remind2reg-eval.tar.gz

clean:
	rm -rf $(VENV) demo_output

# mutation testing (docs/TESTING.md): interfaces/conventions.py, evaluation/metrics.py and model/stages.py's
# full_resolution_field against the fast subset named in setup.cfg; prints the count of each outcome
mutation: venv
	rm -rf mutants
	$(VENV)/bin/mutmut run "interfaces.conventions*" "evaluation.metrics*" "model.stages.x_full_resolution_field*" > /dev/null 2>&1 || true
	$(VENV)/bin/mutmut results --all true | awk '{print $$NF}' | sort | uniq -c
	$(VENV)/bin/mutmut results
