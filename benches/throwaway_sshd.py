#!/usr/bin/env python3
"""A throw-away sshd on a random 127.0.0.1 port, for ssh benchmarks.

Host and client keys are made in a temporary directory, which also holds the
configuration and authorized_keys; nothing outside it is changed except
`mkdir -p /run/sshd` (sshd's privilege-separation directory). The server
accepts only that client key, for the user running this script (root logins
are allowed so that benchmarks can run as root). Its sessions get
XDG_CACHE_HOME and TMPDIR inside that directory, so mitogen's remote cache
there is private to the server.

As a module (benches/compare.py --ssh):

    with ThrowawaySshd() as sshd:
        subprocess.run(['ssh'] + sshd.ssh_args() + ['true'])

Standalone, for trying things by hand (Ctrl-C stops the server):

    python3 benches/throwaway_sshd.py
"""

import ctypes
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SSHD = '/usr/sbin/sshd'
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def die_with_parent():
    """Runs in the forked child before sshd starts: the kernel sends sshd
    SIGTERM when this process dies, so a killed benchmark leaves no server."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def stop_on_sigterm():
    """Turns SIGTERM into SystemExit, so `with ThrowawaySshd()` cleans up."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def free_port():
    # The port is free when asked; sshd binds it a moment later. Another
    # process taking it in between makes sshd fail to start, reported below.
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class ThrowawaySshd:
    """An sshd process, its keys and its port; a context manager."""

    def __init__(self):
        self.dir = None
        self.proc = None
        self.port = None
        self.user = getpass.getuser()
        self.client_key = None
        self.log = None

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if not os.access(SSHD, os.X_OK):
            raise RuntimeError('%s is missing (install openssh-server)' % SSHD)
        self.dir = tempfile.mkdtemp(prefix='mitogen-sshd-')
        os.chmod(self.dir, 0o700)
        host_key = os.path.join(self.dir, 'host_ed25519')
        self.client_key = os.path.join(self.dir, 'client_ed25519')
        for key in (host_key, self.client_key):
            subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key],
                           check=True, timeout=30, stdin=subprocess.DEVNULL)
        authorized = os.path.join(self.dir, 'authorized_keys')
        shutil.copyfile(self.client_key + '.pub', authorized)
        os.chmod(authorized, 0o600)
        self.port = free_port()
        cache = os.path.join(self.dir, 'cache')
        tmp = os.path.join(self.dir, 'tmp')
        os.mkdir(cache)
        os.mkdir(tmp)
        config = os.path.join(self.dir, 'sshd_config')
        with open(config, 'w') as fp:
            fp.write('\n'.join([
                'ListenAddress 127.0.0.1',
                'Port %d' % self.port,
                'HostKey %s' % host_key,
                'AuthorizedKeysFile %s' % authorized,
                'PidFile %s' % os.path.join(self.dir, 'sshd.pid'),
                'StrictModes no',
                'UsePAM no',
                'PermitRootLogin yes',
                'PasswordAuthentication no',
                'KbdInteractiveAuthentication no',
                'AllowUsers %s' % self.user,
                'Subsystem sftp internal-sftp',
                # The sessions' cache and temporary directories are this
                # server's own: emptying the cache for a cold connect then
                # touches nothing another program of the user relies on, and
                # nothing else can fill it between the emptying and the connect.
                'SetEnv XDG_CACHE_HOME=%s TMPDIR=%s' % (cache, tmp),
                '',
            ]))
        os.makedirs('/run/sshd', mode=0o755, exist_ok=True)
        self.log = open(os.path.join(self.dir, 'sshd.log'), 'w+')
        self.proc = subprocess.Popen([SSHD, '-D', '-e', '-f', config],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)
        self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('sshd exited with status %s:\n%s'
                                   % (self.proc.returncode, self.log_text()))
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('sshd did not listen on port %d within %.0f s:\n%s'
                           % (self.port, START_TIMEOUT, self.log_text()))

    def log_text(self):
        if not self.log:
            return ''
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def ssh_options(self):
        """`-o` options that reach this server with its client key and no
        known_hosts (its host key is new every time)."""
        return [
            'StrictHostKeyChecking=no',
            'UserKnownHostsFile=/dev/null',
            'IdentityFile=%s' % self.client_key,
            'IdentitiesOnly=yes',
        ]

    def target(self):
        """The server as a mitogen target: user@127.0.0.1:port."""
        return '%s@127.0.0.1:%d' % (self.user, self.port)

    def ssh_args(self):
        """Arguments of the system ssh up to and including the host."""
        args = ['-p', str(self.port), '-l', self.user]
        for opt in self.ssh_options():
            args += ['-o', opt]
        return args + ['127.0.0.1']


def main():
    stop_on_sigterm()
    with ThrowawaySshd() as sshd:
        print('target:  %s' % sshd.target())
        print('options: %s' % ' '.join('-o ' + o for o in sshd.ssh_options()))
        print('ssh:     ssh %s' % ' '.join(sshd.ssh_args()))
        sys.stdout.flush()
        try:
            sshd.proc.wait()
        except KeyboardInterrupt:
            pass


if __name__ == '__main__':
    main()
