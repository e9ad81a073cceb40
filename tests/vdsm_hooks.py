"""VDSM's hook runner, stood in for as thinly as possible.

What lib/vdsm/common/hooks.py (_runHooksDir) does, and what a test of our
hooks must reproduce to prove anything about a real host:
- the scripts are the executable files of HOOKDIR/<point>/, run in sorted
  order, with no arguments;
- the data goes into a temp file (mkstemp, owned by the vdsm user: vdsmd
  runs as vdsm:kvm) named by $_hook_domxml (XML) or $_hook_json (JSON);
- the environment is VDSM's own, plus the VM's custom properties, $vmId
  and PYTHONPATH extended with vdsm's hook helper directory;
- ANY non-zero exit is an error; 2 also stops the remaining scripts; with
  raiseError (before_vm_start, before_nic_hotplug) an error raises
  HookError and the operation fails;
- the data is read back from the file afterwards (JSON: json.loads).
VM hooks run as vdsm:kvm, network hooks as root (inside supervdsmd).
"""
import glob
import json
import os
import pwd
import grp
import subprocess
import tempfile
import time

VDSM_USER, VDSM_GROUP = 'vdsm', 'kvm'
# vdsmd's unit environment (systemd's default PATH), nothing of the tests'
VDSM_ENV = {'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin',
            'LANG': 'C.UTF-8'}
RAISES = {'before_vm_start', 'before_nic_hotplug', 'before_network_setup'}
JSON_HOOKS = {'after_get_caps', 'after_network_setup',
              'before_network_setup'}
AS_ROOT = {'after_network_setup', 'before_network_setup'}


class HookError(Exception):
    """What VDSM raises: the VM start or hot-plug fails."""


def ensure_vdsm_user():
    """The system group and user VDSM creates (test-rig recipe)."""
    try:
        grp.getgrnam(VDSM_GROUP)
    except KeyError:
        subprocess.run(['groupadd', '-r', VDSM_GROUP], check=True)
    try:
        pwd.getpwnam(VDSM_USER)
    except KeyError:
        subprocess.run(['useradd', '-r', '-g', VDSM_GROUP, '-M', '-s',
                        '/usr/sbin/nologin', VDSM_USER], check=True)
    return pwd.getpwnam(VDSM_USER).pw_uid, grp.getgrnam(VDSM_GROUP).gr_gid


class Result:
    def __init__(self):
        self.runs = []          # (script, rc, stderr, elapsed)
        self.data = None
        self.error = None

    @property
    def stderr(self):
        return ''.join(err for _, _, err, _ in self.runs)

    @property
    def rc(self):
        return self.runs[-1][1] if self.runs else None

    @property
    def elapsed(self):
        return sum(e for _, _, _, e in self.runs)


def run_hooks_dir(hookdir, point, data, custom=None, vm_id=None, env=None,
                  timeout=120):
    """Run HOOKDIR/<point>/* as VDSM does. Returns a Result whose .error is
    the HookError VDSM would raise (None when the operation goes on)."""
    scripts = sorted(s for s in glob.glob(os.path.join(hookdir, point, '*'))
                     if os.path.isfile(s) and os.access(s, os.X_OK))
    result = Result()
    if not scripts:
        result.data = data
        return result
    as_root = point in AS_ROOT
    uid, gid = (0, 0) if as_root else ensure_vdsm_user()
    fd, path = tempfile.mkstemp(prefix='vdsm-dhcp-hook-')
    try:
        os.write(fd, (json.dumps(data) if point in JSON_HOOKS
                      else data or '').encode())
        os.close(fd)
        os.chown(path, uid, gid)      # vdsmd's own file
        scriptenv = dict(VDSM_ENV, **(env or {}))
        scriptenv.update(custom or {})
        if vm_id:
            scriptenv['vmId'] = vm_id
        scriptenv['PYTHONPATH'] = ':'.join(
            [scriptenv.get('PYTHONPATH', ''), '/usr/lib/python3/site-'
             'packages/vdsm/hook'])
        scriptenv['_hook_json' if point in JSON_HOOKS
                  else '_hook_domxml'] = path
        errors = []
        for script in scripts:
            # vdsmd already runs as vdsm: it spawns a hook with no change of
            # user. From root, setpriv does that change after our spawn,
            # which stays a cheap vfork (subprocess's own user=/group=
            # force a full fork of this process: 200 VMs starting at once
            # then wait in line for it).
            argv = [script] if as_root else [
                'setpriv', '--reuid', str(uid), '--regid', str(gid),
                '--init-groups', '--', script]
            started = time.monotonic()
            p = subprocess.run(argv, env=scriptenv, capture_output=True,
                               text=True, timeout=timeout, cwd='/')
            result.runs.append((script, p.returncode, p.stderr,
                                time.monotonic() - started))
            if p.returncode != 0:
                errors.append(p.stderr)
            if p.returncode == 2:
                break
        if errors and point in RAISES:
            result.error = HookError(errors[-1])
        with open(path, encoding='utf-8') as f:
            text = f.read()
        result.data = json.loads(text) if point in JSON_HOOKS else text
    finally:
        os.unlink(path)
    return result


def install_hooks(root_dir, destdir, python):
    """`make install-host DESTDIR=destdir` with the hooks run by `python`;
    returns the installed hooks directory."""
    ensure_vdsm_user()
    subprocess.run(['make', '-s', '-C', root_dir, 'install-host',
                    'DESTDIR=%s' % destdir, 'VDSM_PYTHON=%s' % python,
                    'VDSM_SITE=/usr/lib/python3/site-packages/vdsm'],
                   check=True, capture_output=True, timeout=120)
    os.chmod(destdir, 0o755)
    return os.path.join(destdir, 'usr', 'libexec', 'vdsm', 'hooks')
