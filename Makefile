# make demo   - set up, then run the agent on an isolated lab (namespaces only)
# make check  - set up, then run the whole test suite in its own namespaces
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo check bench bench-quick sample-config clean install-host

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-deps scripts/install-neutron-lab
	scripts/install-deps
	scripts/install-neutron-lab
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	tests/isolated $(PY) -m demo.lab

check: setup
	tests/isolated $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	tests/isolated $(PY) -m bench.run

bench-quick: setup
	tests/isolated $(PY) -m bench.run --quick

sample-config: setup
	$(VENV)/bin/oslo-config-generator --namespace vdsm_dhcp \
		--output-file etc/vdsm-dhcp.conf.sample

clean:
	rm -rf $(VENV) *.egg-info

# Install onto a VDSM host (run as root there; DESTDIR for packaging).
# The Python package itself: pip install . (or a distribution package).
DESTDIR ?=
HOOKDIR ?= /usr/libexec/vdsm/hooks
VDSM_SITE ?= $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/vdsm
install-host:
	for point in before_vm_start before_nic_hotplug after_get_caps after_network_setup; do \
		install -D -m 0755 hooks/50_vdsm_dhcp $(DESTDIR)$(HOOKDIR)/$$point/50_vdsm_dhcp; done
	install -D -m 0644 systemd/vdsm-dhcp-restore.service $(DESTDIR)/usr/lib/systemd/system/vdsm-dhcp-restore.service
	install -D -m 0644 systemd/vdsm-dhcp.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/vdsm-dhcp.conf
	install -D -m 0644 systemd/vdsm-dhcp.sysctl $(DESTDIR)/usr/lib/sysctl.d/60-vdsm-dhcp.conf
	install -D -m 0644 vdsm_dhcp/vdsm/supervdsm_api.py $(DESTDIR)$(VDSM_SITE)/supervdsm_api/vdsm_dhcp.py
	install -D -m 0644 vdsm_dhcp/vdsm/vdsm_tool.py $(DESTDIR)$(VDSM_SITE)/tool/vdsm_dhcp.py
	install -D -m 0644 etc/vdsm-dhcp.conf.sample $(DESTDIR)/usr/share/doc/vdsm-dhcp/vdsm-dhcp.conf.sample
	test -e $(DESTDIR)/etc/vdsm-dhcp/vdsm-dhcp.conf || \
		install -D -m 0600 etc/vdsm-dhcp.conf.sample $(DESTDIR)/etc/vdsm-dhcp/vdsm-dhcp.conf
