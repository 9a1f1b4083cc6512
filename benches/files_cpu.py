#!/usr/bin/env python3
"""Where the CPU of a large push over ssh goes: CPU seconds per GiB of every
process, ssh and sshd included, next to the floors `ssh HOST 'cat >
/dev/null'` and `ssh HOST 'cat > FILE'`, interleaved.

On 2 CPUs every process of a transfer over ssh competes for the same two
cores, so what the transfer moves is bounded by 2 ÷ (the sum of its
processes' CPU seconds per GiB); this prints each process's share, which
says what a target such as "90 % of ssh cat" leaves to mitogen-rs's own two
processes (docs/performance.md, "What is behind these figures").

A throw-away sshd on 127.0.0.1 (benches/throwaway_sshd.py) runs in a cgroup
of its own (`cpuacct` on cgroup v1, or a v2 group), every client command in
another; every process of both groups has its `/proc/PID/stat` read every
5 ms (a process's last few milliseconds before it exits are lost: the
group's own total, printed beside, says how much). Per round: the two floors
(the source file given to ssh with `sendfile`, as benches/files.py does),
then `mitogen copy TARGET -- FILE DST` with each binary given, the program
already in the remote cache. Rates include the login or connect (a whole
command timed); the CPU figures are the point.

Usage (as root): python3 benches/files_cpu.py [--mib 1024] [--rounds 3]
       [--cipher aes128-gcm@openssh.com] [BIN ...]   (default: the release
       build of this checkout)
"""

import argparse
import collections
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throwaway_sshd import ThrowawaySshd, stop_on_sigterm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
GROUPS = ('mitogen-bench-cli', 'mitogen-bench-srv')


class Group(object):
    """A cgroup to put processes in and list them from."""

    def __init__(self, name):
        v1 = '/sys/fs/cgroup/cpuacct'
        base = v1 if os.path.isdir(v1) else '/sys/fs/cgroup'
        self.path = os.path.join(base, name)
        os.makedirs(self.path, exist_ok=True)

    def join(self, pid=None):
        with open(os.path.join(self.path, 'cgroup.procs'), 'w') as f:
            f.write(str(pid or os.getpid()))

    def pids(self):
        try:
            with open(os.path.join(self.path, 'cgroup.procs')) as f:
                return f.read().split()
        except OSError:
            return []

    def usage_s(self):
        """CPU seconds of every process the group ever held."""
        try:
            with open(os.path.join(self.path, 'cpuacct.usage')) as f:
                return int(f.read()) / 1e9
        except OSError:
            with open(os.path.join(self.path, 'cpu.stat')) as f:
                for line in f:
                    if line.startswith('usage_usec '):
                        return int(line.split()[1]) / 1e6
        return 0.0


class Sampler(threading.Thread):
    """The CPU time of every process of the groups, by name, sampled."""

    def __init__(self, groups):
        super().__init__(daemon=True)
        self.groups = groups
        self.seen = {}
        self.done = threading.Event()
        self.hz = os.sysconf('SC_CLK_TCK')

    def run(self):
        while not self.done.is_set():
            for g in self.groups:
                for p in g.pids():
                    try:
                        with open('/proc/%s/stat' % p) as f:
                            s = f.read()
                    except OSError:
                        continue
                    comm = s[s.index('(') + 1:s.rindex(')')]
                    f = s[s.rindex(')') + 2:].split()
                    cpu = (int(f[11]) + int(f[12])) / self.hz
                    side = 'client' if g is self.groups[0] else 'server'
                    self.seen[p] = (side, comm, cpu)
            time.sleep(0.005)

    def by_name(self):
        out = collections.Counter()
        for side, comm, cpu in self.seen.values():
            # The remote program's process is named after its hash.
            if re.fullmatch('[0-9a-f]{15}', comm):
                comm = 'context'
            out['%s %s' % (side, comm)] += cpu
        return out


def measure(label, cmd, groups, gib, feed=None):
    """Runs `cmd` in the client group; prints MiB/s and CPU s per GiB."""
    before = [g.usage_s() for g in groups]
    sampler = Sampler(groups)
    sampler.start()
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, preexec_fn=groups[0].join)
    if feed:
        size = os.path.getsize(feed)
        with open(feed, 'rb') as fp:
            off = 0
            while off < size:
                off += os.sendfile(proc.stdin.fileno(), fp.fileno(), off, MIB)
        proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError('%s failed' % label)
    wall = time.perf_counter() - t0
    time.sleep(0.05)
    sampler.done.set()
    sampler.join()
    totals = [(g.usage_s() - b) / gib for g, b in zip(groups, before)]
    parts = sorted(sampler.by_name().items(), key=lambda kv: -kv[1])
    print('%-24s %6.0f MiB/s  client %.2f server %.2f s/GiB: %s' % (
        label, gib * 1024 / wall, totals[0], totals[1],
        ', '.join('%s %.2f' % (k, v / gib) for k, v in parts if v / gib >= 0.01)), flush=True)


def main():
    stop_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--mib', type=int, default=1024)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--cipher', help='ssh -o Ciphers=, for every contender')
    ap.add_argument('bins', nargs='*')
    args = ap.parse_args()
    bins = args.bins or [os.path.join(ROOT, 'target', 'x86_64-unknown-linux-gnu',
                                      'release', 'mitogen')]
    groups = [Group(n) for n in GROUPS]
    work = tempfile.mkdtemp(prefix='mitogen-files-cpu-')
    src, dst = os.path.join(work, 'src.bin'), os.path.join(work, 'dst.bin')
    with open(src, 'wb') as f:
        for _ in range(args.mib):
            f.write(os.urandom(MIB))
    gib = args.mib / 1024
    extra = ['-o', 'Ciphers=' + args.cipher] if args.cipher else []
    try:
        with ThrowawaySshd() as sshd:
            groups[1].join(sshd.proc.pid)
            ssh = ['ssh'] + sshd.ssh_args()[:-1] + extra + [
                '-o', 'Compression=no', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR',
                '127.0.0.1']
            opts = []
            for o in sshd.ssh_options() + ['LogLevel=ERROR']:
                opts += ['-o', o]
            opts += extra
            for b in bins:
                subprocess.run([b, 'copy'] + opts + [sshd.target(), '--', '/etc/hostname',
                                                     os.path.join(work, 'warm')],
                               check=True, stdout=subprocess.DEVNULL)
            print('load average %s; %d MiB; cipher %s' % (
                open('/proc/loadavg').read().split()[0], args.mib, args.cipher or 'default'))
            for _ in range(args.rounds):
                measure("ssh 'cat > /dev/null'", ssh + ['cat > /dev/null'], groups, gib,
                        feed=src)
                measure("ssh 'cat > FILE'", ssh + ['cat > %s' % shlex.quote(dst)], groups,
                        gib, feed=src)
                os.unlink(dst)
                for b in bins:
                    measure(os.path.basename(b), [b, 'copy'] + opts + [sshd.target(), '--',
                                                                        src, dst],
                            groups, gib)
                    os.unlink(dst)
            print('load average %s' % open('/proc/loadavg').read().split()[0])
    finally:
        subprocess.run(['rm', '-rf', work])
        for g in groups:
            try:
                os.rmdir(g.path)
            except OSError:
                pass


if __name__ == '__main__':
    main()
