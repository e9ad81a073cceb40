# make demo   - set up, then run the agent on an isolated lab (namespaces only)
# make check  - set up, then run the whole test suite in its own namespaces
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup lint demo check bench bench-quick sample-config clean install-host rpm

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

# the layers (.importlinter) and the lint (pyproject.toml) before the tests
check: setup lint
	tests/isolated $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check vdsm_dhcp tests bench demo hooks/50_vdsm_dhcp

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
# The Python package itself: pip install . (or the RPM: make rpm).
# VDSM_PYTHON is the interpreter VDSM runs: the hooks run with it, and the
# drop-ins go into its vdsm package (override with VDSM_SITE).
DESTDIR ?=
HOOKDIR ?= /usr/libexec/vdsm/hooks
CONFDIR ?= /etc/vdsm-dhcp
VDSM_PYTHON ?= /usr/bin/python3
VDSM_GROUP ?= kvm
VDSM_SITE ?= $(shell $(VDSM_PYTHON) -c 'import os, vdsm; print(os.path.dirname(vdsm.__file__))' 2>/dev/null)
HOOK_POINTS := before_vm_start before_nic_hotplug after_get_caps after_network_setup
install-host:
	@test -n "$(VDSM_SITE)" || { echo "install-host: $(VDSM_PYTHON) cannot import vdsm: run this on a VDSM host, or name VDSM's package directory with VDSM_SITE=/usr/lib/python3.X/site-packages/vdsm" >&2; exit 2; }
	@getent group $(VDSM_GROUP) >/dev/null || { echo "install-host: no group $(VDSM_GROUP) (VDSM's hooks run as vdsm:kvm); set VDSM_GROUP" >&2; exit 2; }
	for point in $(HOOK_POINTS); do \
		install -d -m 0755 $(DESTDIR)$(HOOKDIR)/$$point && \
		sed '1s|.*|#!$(VDSM_PYTHON)|' hooks/50_vdsm_dhcp > $(DESTDIR)$(HOOKDIR)/$$point/50_vdsm_dhcp && \
		chmod 0755 $(DESTDIR)$(HOOKDIR)/$$point/50_vdsm_dhcp || exit 1; done
	install -D -m 0644 systemd/vdsm-dhcp-restore.service $(DESTDIR)/usr/lib/systemd/system/vdsm-dhcp-restore.service
	install -D -m 0644 systemd/vdsm-dhcp.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/vdsm-dhcp.conf
	install -D -m 0644 systemd/vdsm-dhcp.sysctl $(DESTDIR)/usr/lib/sysctl.d/60-vdsm-dhcp.conf
	install -D -m 0644 vdsm_dhcp/vdsm/supervdsm_api.py $(DESTDIR)$(VDSM_SITE)/supervdsm_api/vdsm_dhcp.py
	install -D -m 0644 vdsm_dhcp/vdsm/vdsm_tool.py $(DESTDIR)$(VDSM_SITE)/tool/vdsm_dhcp.py
	install -D -m 0644 etc/vdsm-dhcp.conf.sample $(DESTDIR)/usr/share/doc/vdsm-dhcp/vdsm-dhcp.conf.sample
	install -d -m 0750 -o root -g $(VDSM_GROUP) $(DESTDIR)$(CONFDIR)
	test -e $(DESTDIR)$(CONFDIR)/vdsm-dhcp.conf || \
		install -m 0640 -o root -g $(VDSM_GROUP) etc/vdsm-dhcp.conf $(DESTDIR)$(CONFDIR)/vdsm-dhcp.conf
	test -e $(DESTDIR)$(CONFDIR)/secrets.conf || \
		install -m 0600 -o root -g root etc/secrets.conf $(DESTDIR)$(CONFDIR)/secrets.conf

# The RPM (vdsm-dhcp.spec) into build/rpm/RPMS/noarch/. Built elsewhere than
# on EL 9 (Debian's rpmbuild), EL 9's macros are given here; on an EL host
# use its own: make rpm RPM_FOREIGN_FLAGS=
RPM_TOPDIR := $(CURDIR)/build/rpm
RPM_VERSION := $(shell sed -n 's/^Version: *\([0-9][^ ]*\)$$/\1/p' vdsm-dhcp.spec)
RPM_FOREIGN_FLAGS ?= --nodeps \
	--define '__python3 /usr/bin/python3' \
	--define 'python3_sitelib /usr/lib/python3.9/site-packages' \
	--define '_libexecdir /usr/libexec' \
	--define '_unitdir /usr/lib/systemd/system' \
	--define '_presetdir /usr/lib/systemd/system-preset' \
	--define '_tmpfilesdir /usr/lib/tmpfiles.d' \
	--define '_sysctldir /usr/lib/sysctl.d' \
	--define '_docdir_fmt %%{NAME}' \
	--define 'dist .el9'
RPM_SOURCES := README.md pyproject.toml vdsm-dhcp.spec vdsm_dhcp hooks/50_vdsm_dhcp \
	systemd etc/vdsm-dhcp.conf etc/secrets.conf etc/vdsm-dhcp.conf.sample vdsm
rpm:
	rm -rf $(RPM_TOPDIR)
	mkdir -p $(RPM_TOPDIR)/SOURCES
	tar -czf $(RPM_TOPDIR)/SOURCES/vdsm-dhcp-$(RPM_VERSION).tar.gz \
		--exclude=__pycache__ --transform 's,^,vdsm-dhcp-$(RPM_VERSION)/,' $(RPM_SOURCES)
	rpmbuild -bb --define '_topdir $(RPM_TOPDIR)' $(RPM_FOREIGN_FLAGS) vdsm-dhcp.spec
