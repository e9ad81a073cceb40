# make demo   - set up, then run the agent on an isolated lab (namespaces only)
# make check  - set up, then run the whole test suite in its own namespaces
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo check test sample-config bench bench-quick clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-deps
	scripts/install-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	tests/isolated $(PY) -m demo.lab

check: setup
	tests/isolated $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

sample-config: setup
	$(VENV)/bin/oslo-config-generator --namespace vdsm_dhcp \
		--output-file etc/vdsm-dhcp.conf.sample

clean:
	rm -rf $(VENV) *.egg-info
