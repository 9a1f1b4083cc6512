#!/usr/bin/env python3
"""File transfer side by side: mitogen-rs, Python Mitogen's FileService, and
the usual tools, locally and over a loopback sshd, in one run, interleaved.

Builds `mitogen` in release mode and the Python venv (as benches/compare.py
does), makes a source file of --mib MiB and a tree of --tree-files files of
1 KiB in a scratch directory, then runs for --rounds rounds, every contender
once per round (the order reversed every other round):

  local   `mitogen bench --files-only --target local`, Python Mitogen
          (benches/python/bench_files.py: FileService in the master, the child
          pulls with FileService.get), `cp`, `rsync`, and the floor
          `cat FILE > /dev/null`; the tree with `cp -r` and `rsync -a`.
  ssh     the same against a throw-away sshd on 127.0.0.1 (benches/
          throwaway_sshd.py; no compression anywhere), plus `scp`, `sftp -b`,
          `rsync -e ssh`, `scp -r`, `rsync -a -e ssh`, and the floors
          `ssh HOST 'cat > /dev/null' < FILE` (push) and `ssh HOST 'cat FILE'
          > /dev/null` (fetch), timed from the remote shell's first output,
          so without the login.

Every timed run starts with `sync` (untimed, also inside `mitogen bench`),
so that no run pays for the dirty pages of the one before. Trees are made in
new places and none is removed before the whole run ends (mitogen-rs with
`--keep-trees`, Python Mitogen with `--keep-trees`; see EXT4_RECENT_S). The tools are
timed as whole commands (their ssh login included: `ssh_true_ms` in the
table says what one costs); mitogen-rs and Python Mitogen have their context
up before timing, as `mitogen bench` always does.

Then, once per place, `mitogen bench --files-only --file-mib --rss-mib` for
the peak RSS (VmHWM) of every process of ours through a large push and fetch.

Prints the tables in markdown (or, with --json, one JSON object of every
round's figures and the medians) and writes them into the "File transfer"
section of docs/performance.md (--output; --no-write to leave it alone).

Usage: python3 benches/files.py [--rounds 3] [--mib 1024] [--tree-files 1000]
       [--rss-mib 4096] [--no-ssh] [--json] [--no-write] [--output PATH]
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (build, venv, machine, median, log: one way to do each)
from throwaway_sshd import ThrowawaySshd, stop_on_sigterm  # noqa: E402

ROOT = compare.ROOT
MIB = 1024 * 1024
RUN_TIMEOUT = 1800

FILES_BEGIN = '<!-- files section: written by benches/files.py -->'
FILES_END = '<!-- end of files section -->'
# Written by hand inside the section (what the figures mean, what was found
# behind them); kept as it is by every run.
NOTES_BEGIN = '<!-- files notes: kept by benches/files.py -->'
NOTES_END = '<!-- end of files notes -->'

# The targets.
LOCAL_MIB_S = 2048.0
SSH_FLOOR_FRACTION = 0.90
OVER_PYTHON = 1.3
TREE_OVER_SCP = 10.0
TREE_OVER_RSYNC = 2.0
RSS_KIB = 64 * 1024
REPUSH_OVER_RSYNC = 5.0

# The options mitogen's ssh method gives ssh, for the tools too.
SSH_FIXED = ['BatchMode=yes', 'LogLevel=ERROR', 'Compression=no']

log = compare.log
median = compare.median


def timed(cmd, **kw):
    """Seconds one command takes, start to exit; fails on a non-zero exit."""
    kw.setdefault('stdout', subprocess.DEVNULL)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=RUN_TIMEOUT, stdin=kw.pop('stdin', subprocess.DEVNULL),
                   **kw)
    return time.perf_counter() - t0


def clean(*paths):
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    os.sync()


def make_source(path, mib):
    """`mib` MiB of incompressible bytes, no two MiB alike (nothing can be
    skipped as sparse or repeated)."""
    block = bytearray(os.urandom(MIB))
    with open(path, 'wb') as fp:
        for i in range(mib):
            block[:8] = i.to_bytes(8, 'little')
            fp.write(block)


def make_tree(root, n):
    """`n` files of 1 KiB, 100 to a directory."""
    for i in range(n):
        d = os.path.join(root, 'd%03d' % (i // 100))
        if i % 100 == 0:
            os.makedirs(d)
        with open(os.path.join(d, 'f%04d' % i), 'wb') as fp:
            fp.write(os.urandom(1024))


class Place(object):
    """Where the copies go: this machine directly, or through ssh."""

    def __init__(self, name, ours_bin, py, work, args, sshd=None):
        self.name = name
        self.ours_bin = ours_bin
        self.py = py
        self.work = work
        self.args = args
        self.sshd = sshd
        self.src = os.path.join(work, 'src.bin')
        self.tree = os.path.join(work, 'tree')
        self.out = os.path.join(work, 'out-' + name)
        os.makedirs(self.out)

    # -- ssh pieces ----------------------------------------------------------

    def ssh_opts(self):
        opts = []
        for o in SSH_FIXED + self.sshd.ssh_options():
            opts += ['-o', o]
        return opts

    def ssh(self):
        return ['ssh', '-p', str(self.sshd.port), '-l', self.sshd.user] + self.ssh_opts()

    def remote(self, path):
        return '%s@127.0.0.1:%s' % (self.sshd.user, path)

    def rsync_e(self):
        return ['-e', ' '.join(shlex.quote(c) for c in self.ssh())]

    # -- contenders ------------------------------------------------------------

    def ours(self, mib=None):
        """`mitogen bench --files-only`: on the shared source file, as every
        other contender (a file it made itself just before would leave the
        page cache in another state: the pages that file takes are the ones
        the push's copy would have reused); with `mib`, on its own file of
        that size (the peak-memory run)."""
        # Its temporary directories (here, and in a `local` target, which
        # inherits TMPDIR) go in the run's own, kept to the end like every
        # contender's trees.
        tmp = self.fresh('ours-tmp')
        os.makedirs(tmp)
        cmd = ['env', 'TMPDIR=' + tmp, self.ours_bin, 'bench', '--files-only', '--json',
               '--file-runs', '1', '--keep-trees', '--tree-files', str(self.args.tree_files)]
        cmd += ['--file-mib', str(mib)] if mib else ['--file-from', self.src]
        if self.sshd:
            cmd += ['--target', self.sshd.target()]
            for o in self.sshd.ssh_options():
                cmd += ['-o', o]
        else:
            cmd += ['--target', 'local']
        return compare.bench_json(cmd)

    def python(self):
        cmd = [self.py, os.path.join(ROOT, 'benches', 'python', 'bench_files.py'),
               '--src', self.src, '--tree', self.tree, '--scratch', self.out, '--keep-trees']
        if self.sshd:
            cmd += ['--ssh', '127.0.0.1', '--ssh-port', str(self.sshd.port),
                    '--ssh-user', self.sshd.user, '--identity', self.sshd.client_key]
            for o in SSH_FIXED:
                cmd += ['--ssh-option', o]
        return compare.bench_json(cmd)

    def pair(self, push_cmd, fetch_cmd, dst, back):
        """MiB/s of a push command writing `dst` and a fetch reading it back
        into `back`."""
        mib = self.args.mib
        clean(dst)
        push = mib / timed(push_cmd)
        clean(back)
        fetch = mib / timed(fetch_cmd)
        clean(dst, back)
        return {'push_mib_s': push, 'fetch_mib_s': fetch}

    def fresh(self, name):
        """A path in the output directory not used before in this run:
        trees are removed only when the place is done (see settle())."""
        self.n = getattr(self, 'n', 0) + 1
        return os.path.join(self.out, '%s-%d' % (name, self.n))

    def tree_and_noop(self, cmd, noop=True):
        os.sync()
        r = {'small_files_per_s': self.args.tree_files / timed(cmd)}
        if noop:
            os.sync()
            r['repush_ms'] = timed(cmd) * 1e3
        return r

    def cp(self):
        dst, back = os.path.join(self.out, 'cp.bin'), os.path.join(self.out, 'cp.back')
        r = self.pair(['cp', self.src, dst], ['cp', dst, back], dst, back)
        r.update(self.tree_and_noop(['cp', '-r', self.tree, self.fresh('cp-tree')], noop=False))
        return r

    def rsync(self):
        dst, back = os.path.join(self.out, 'rsync.bin'), os.path.join(self.out, 'rsync.back')
        tree_dst = self.fresh('rsync-tree')
        if self.sshd:
            e = self.rsync_e()
            r = self.pair(['rsync'] + e + [self.src, self.remote(dst)],
                          ['rsync'] + e + [self.remote(dst), back], dst, back)
            cmd = ['rsync', '-a'] + e + [self.tree + '/', self.remote(tree_dst + '/')]
        else:
            r = self.pair(['rsync', self.src, dst], ['rsync', dst, back], dst, back)
            cmd = ['rsync', '-a', self.tree + '/', tree_dst + '/']
        r.update(self.tree_and_noop(cmd))
        return r

    def scp(self):
        dst, back = os.path.join(self.out, 'scp.bin'), os.path.join(self.out, 'scp.back')
        base = ['scp', '-q', '-P', str(self.sshd.port)] + self.ssh_opts()
        r = self.pair(base + [self.src, self.remote(dst)], base + [self.remote(dst), back],
                      dst, back)
        r.update(self.tree_and_noop(base + ['-r', self.tree, self.remote(self.fresh('scp-tree'))],
                                    noop=False))
        return r

    def sftp(self):
        dst, back = os.path.join(self.out, 'sftp.bin'), os.path.join(self.out, 'sftp.back')
        batch = os.path.join(self.work, 'sftp-batch')

        def cmd(line):
            with open(batch, 'w') as fp:
                fp.write(line + '\n')
            return (['sftp', '-q', '-b', batch, '-P', str(self.sshd.port)] + self.ssh_opts()
                    + ['%s@127.0.0.1' % self.sshd.user])
        mib = self.args.mib
        clean(dst)
        push = mib / timed(cmd('put %s %s' % (self.src, dst)))
        clean(back)
        fetch = mib / timed(cmd('get %s %s' % (dst, back)))
        clean(dst, back)
        return {'push_mib_s': push, 'fetch_mib_s': fetch}

    def floor(self):
        """MiB/s of the plain pipe: `cat` locally, `ssh HOST cat` over ssh."""
        mib = self.args.mib
        if not self.sshd:
            os.sync()
            with open(os.devnull, 'wb') as null:
                push = mib / timed(['cat', self.src], stdout=null)
            return {'push_mib_s': push, 'fetch_mib_s': push}
        os.sync()
        push = self.ssh_transfer('echo ready && exec cat > /dev/null', feed=True)
        os.sync()
        fetch = self.ssh_transfer('echo ready && exec cat %s' % shlex.quote(self.src), feed=False)
        # The same, writing the file (as every contender does) instead of
        # throwing the bytes away.
        dst = os.path.join(self.out, 'cat.bin')
        clean(dst)
        push_w = self.ssh_transfer('echo ready && exec cat > %s' % shlex.quote(dst), feed=True)
        clean(dst)
        fetch_w = self.ssh_transfer('echo ready && exec cat %s' % shlex.quote(self.src),
                                    feed=False, into=dst)
        clean(dst)
        t = [timed(self.ssh() + ['127.0.0.1', 'true']) * 1e3 for _ in range(3)]
        return {'push_mib_s': push, 'fetch_mib_s': fetch, 'push_write_mib_s': push_w,
                'fetch_write_mib_s': fetch_w, 'ssh_true_ms': median(t)}

    def ssh_transfer(self, remote, feed, into=None):
        """MiB/s from the remote shell's 'ready' until ssh exits, the source
        file sent into ssh (feed) or ssh's output drained (not feed), into
        the file `into` when given."""
        size = os.path.getsize(self.src)
        proc = subprocess.Popen(self.ssh() + ['127.0.0.1', remote], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, bufsize=0)
        started, failed = [], []

        def work():
            try:
                if proc.stdout.read(6) != b'ready\n':
                    raise RuntimeError('unexpected output from ssh')
                started.append(time.perf_counter())
                if feed:
                    with open(self.src, 'rb') as fp:
                        off = 0
                        while off < size:
                            off += os.sendfile(proc.stdin.fileno(), fp.fileno(), off, MIB)
                else:
                    got = 0
                    out = open(into, 'wb') if into else None
                    while True:
                        b = proc.stdout.read(MIB)
                        if not b:
                            break
                        got += len(b)
                        if out:
                            out.write(b)
                    if out:
                        out.close()
                    if got != size:
                        raise RuntimeError('received %d bytes, expected %d' % (got, size))
            except Exception as e:  # reported below
                failed.append(e)
            finally:
                proc.stdin.close()
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        status = proc.wait(timeout=RUN_TIMEOUT)
        ended = time.perf_counter()
        worker.join(60)
        if failed or status != 0 or not started:
            raise RuntimeError('ssh %r failed (%s): %s' % (remote, status, failed))
        return self.args.mib / (ended - started[0])

    def contenders(self):
        c = [('mitogen-rs', self.ours), ('Python Mitogen', self.python)]
        if self.sshd:
            c += [('scp', self.scp), ('sftp', self.sftp)]
        else:
            c += [('cp', self.cp)]
        return c + [('rsync', self.rsync), ('floor', self.floor)]


# Seconds ext4 without a journal (this machine's root) passes over freed
# inodes when it allocates new ones (RECENTCY_MIN in the kernel's
# fs/ext4/ialloc.c; 360 while their table is not written back): each file
# made within that time of many deletions in its block group pays for
# reading past every one (0.7 ms a file measured here after 3,000). So no
# tree is deleted before the whole run ends: a contender made to pay for
# the one before would measure the order of the run, not itself.
EXT4_RECENT_S = 60


def settle():
    """Between contenders: write everything back (nothing is deleted)."""
    os.sync()


def run_rounds(place, rounds):
    """Every contender once per round; returns {contender: [figures...]}."""
    contenders = place.contenders()
    got = {name: [] for name, _ in contenders}
    for i in range(rounds):
        log('%s round %d of %d' % (place.name, i + 1, rounds))
        for name, fn in (contenders if i % 2 == 0 else list(reversed(contenders))):
            r = fn()
            log('  %s: %s' % (name, json.dumps(r)))
            got[name].append(r)
            settle()
    return got


def load():
    with open('/proc/loadavg') as fp:
        return fp.read().split()[0]


# -- rendering --------------------------------------------------------------------

def med(rounds, key):
    v = [r[key] for r in rounds if r.get(key) is not None]
    return median(v) if v else None


def med_ratio(a, b, key_a, key_b=None, invert=False):
    """Median over rounds of a[i][key_a] / b[i][key_b] (b / a when invert)."""
    key_b = key_b or key_a
    v = []
    for x, y in zip(a, b):
        if x.get(key_a) and y.get(key_b):
            v.append(y[key_b] / x[key_a] if invert else x[key_a] / y[key_b])
    return median(v) if v else None


def f0(v):
    return '–' if v is None else '{:,.0f}'.format(v)


def fx(v):
    return '–' if v is None else '%.2f×' % v


def met(ok):
    return 'yes' if ok else '**no**'


def render_place(place, got, args):
    ssh = place.sshd is not None
    ours, py, rsync, floor = got['mitogen-rs'], got['Python Mitogen'], got['rsync'], got['floor']
    tools = ['scp', 'sftp', 'rsync'] if ssh else ['cp', 'rsync']
    floor_name = "`ssh HOST cat`" if ssh else '`cat FILE > /dev/null`'
    out = []
    w = out.append
    w('### %s' % ('Over ssh (loopback sshd)' if ssh else 'Local (`local` target)'))
    w('')
    w('%d MiB file, MiB/s (higher is better):' % args.mib)
    w('')
    writing = ' | floor writing the file | ours ÷ it' if ssh else ''
    w('| direction | mitogen-rs | Python FileService | %s | floor %s | ours ÷ floor%s '
      '| ours ÷ Python | target | met |' % (' | '.join(tools), floor_name, writing))
    w('|---|---:|---:|%s---:|---:|%s---:|---|:---:|' % ('---:|' * len(tools),
                                                     '---:|---:|' if ssh else ''))
    for d in ('push', 'fetch'):
        key = d + '_mib_s'
        of_floor = med_ratio(ours, floor, key)
        of_py = med_ratio(ours, py, key)
        if ssh:
            wkey = d + '_write_mib_s'
            also = ' | %s | %s' % (f0(med(floor, wkey)), fx(med_ratio(ours, floor, key, wkey)))
        else:
            also = ''
        if ssh:
            target = '≥ %.0f %% of floor, ≥ %.1f × Python' % (100 * SSH_FLOOR_FRACTION,
                                                            OVER_PYTHON)
            ok = (of_floor or 0) >= SSH_FLOOR_FRACTION and (of_py or 0) >= OVER_PYTHON
        else:
            target = '≥ %.0f MiB/s' % LOCAL_MIB_S
            ok = (med(ours, key) or 0) >= LOCAL_MIB_S
        w('| %s | %s | %s | %s | %s | %s%s | %s | %s | %s |' % (
            d, f0(med(ours, key)), f0(med(py, key)),
            ' | '.join(f0(med(got[t], key)) for t in tools), f0(med(floor, key)),
            fx(of_floor), also, fx(of_py), target, met(ok)))
    w('')
    copy = 'scp -r' if ssh else 'cp -r'
    first = 'scp' if ssh else 'cp'
    w('Tree of %d files of 1 KiB, files/s (higher is better), and a second push of the '
      'unchanged tree, ms (lower is better):' % args.tree_files)
    w('')
    w('| figure | mitogen-rs | Python FileService | `%s` | `rsync -a` | ours ÷ `%s` '
      '| ours ÷ rsync | target | met |' % (copy, copy))
    w('|---|---:|---:|---:|---:|---:|---:|---|:---:|')
    over_copy = med_ratio(ours, got[first], 'small_files_per_s')
    over_rsync = med_ratio(ours, rsync, 'small_files_per_s')
    if ssh:
        tree_target = '≥ %.0f × scp -r, ≥ %.0f × rsync' % (TREE_OVER_SCP, TREE_OVER_RSYNC)
        tree_ok = met((over_copy or 0) >= TREE_OVER_SCP and (over_rsync or 0) >= TREE_OVER_RSYNC)
    else:
        tree_target, tree_ok = '–', '–'
    w('| `small_files_per_s` | %s | %s | %s | %s | %s | %s | %s | %s |' % (
        f0(med(ours, 'small_files_per_s')), f0(med(py, 'small_files_per_s')),
        f0(med(got[first], 'small_files_per_s')), f0(med(rsync, 'small_files_per_s')),
        fx(over_copy), fx(over_rsync), tree_target, tree_ok))
    faster = med_ratio(ours, rsync, 'repush_ms', invert=True)
    w('| `repush_ms` (unchanged) | %s | – | – | %s | – | %s faster | ≥ %.0f × faster than '
      'rsync | %s |' % (
          '–' if med(ours, 'repush_ms') is None else '%.1f' % med(ours, 'repush_ms'),
          '–' if med(rsync, 'repush_ms') is None else '%.1f' % med(rsync, 'repush_ms'),
          fx(faster), REPUSH_OVER_RSYNC, met((faster or 0) >= REPUSH_OVER_RSYNC)))
    warm = med_ratio(ours, rsync, 'repush_warm_ms', 'repush_ms', invert=True)
    w('| `repush_warm_ms` (unchanged, known) | %s | – | – | %s | – | %s faster | ≥ %.0f × faster '
      'than rsync | %s |' % (
          '–' if med(ours, 'repush_warm_ms') is None else '%.1f' % med(ours, 'repush_warm_ms'),
          '–' if med(rsync, 'repush_ms') is None else '%.1f' % med(rsync, 'repush_ms'),
          fx(warm), REPUSH_OVER_RSYNC, met((warm or 0) >= REPUSH_OVER_RSYNC)))
    skipped = [r.get('repush_skipped') for r in ours]
    note = ('Files the re-pushes of mitogen-rs left alone, every round: %s of %d. '
            '`repush_ms` is the push right after the first (where the file system shows '
            'every later change at once, the receiver recorded what it wrote and reads '
            'nothing; elsewhere it hashes again files too recent for their stamps to vouch '
            'for them), `repush_warm_ms` one more after a push more than 2 s later (both sides know '
            'every file\'s stamp and read none; docs/files.md); rsync\'s figure is its '
            'no-op both times.'
            % (', '.join(str(s) for s in skipped), args.tree_files))
    if ssh:
        note += (' One `ssh HOST true` (a login, which every tool\'s figure includes) took '
                 '%.1f ms.' % med(floor, 'ssh_true_ms'))
    w('')
    w(note)
    w('')
    return out


def render_rss(rss, py_rounds_by_place, args):
    out = []
    w = out.append
    w('### Peak memory')
    w('')
    w('VmHWM (KiB) of every process of mitogen-rs through a push and a fetch of a %d MiB '
      'file and the tree (`mitogen bench --files-only --file-mib %d`: this process, then '
      'every hop\'s context, the target last; read from `/proc/self/status` in each), '
      'and of Python Mitogen\'s master and child through its %d MiB runs above.'
      % (args.rss_mib, args.rss_mib, args.mib))
    w('')
    w('| place | mitogen-rs master | mitogen-rs target | Python master (%d MiB) '
      '| Python child (%d MiB) | target | met |' % (args.mib, args.mib))
    w('|---|---:|---:|---:|---:|---|:---:|')
    for name, r in rss.items():
        peaks = r['peak_rss_kib']
        py = py_rounds_by_place.get(name, [])
        w('| %s | %s | %s | %s | %s | < %d KiB per process | %s |' % (
            name, f0(peaks[0]), ' / '.join(f0(p) for p in peaks[1:]),
            f0(med(py, 'master_peak_rss_kib')), f0(med(py, 'child_peak_rss_kib')),
            RSS_KIB, met(max(peaks) < RSS_KIB)))
    w('')
    return out


def render(results, rss, info, args, rerun, loads):
    out = []
    w = out.append
    w(FILES_BEGIN)
    w('## File transfer')
    w('')
    w('`benches/files.py`: mitogen-rs (`mitogen bench --files-only`: `Context::push` / '
      '`Context::fetch` of a file, a tree, then the same tree again) next to Python Mitogen '
      '%s\'s `FileService` (in the master; the child pulls with `FileService.get`, the '
      'original\'s way; fetch is the master pulling from the child\'s own FileService; a '
      'tree is one get per file), `cp`, `scp`, `sftp -b` and `rsync`, locally and over a '
      'throw-away sshd on 127.0.0.1 (no compression anywhere). Each figure is the median '
      'over %d round(s), every contender once per round, the order reversed every other '
      'round; ratios are taken within each round, then the median. Every timed run starts '
      'after `sync`. Every tree is made in a new place and none is deleted before the whole '
      'run ends (mitogen-rs and Python Mitogen leave theirs too): this machine\'s ext4 has '
      'no journal, and such a file system passes over inodes freed in the last %d s, reading '
      'each one\'s record, when it allocates one, so a tree made within a minute of another\'s '
      'deletion costs several times more. The tools are timed as whole commands (login included); mitogen-rs '
      'and Python Mitogen have their context up before timing. The floor over ssh is '
      'plain ssh moving the same file, timed from the remote shell\'s first output (no '
      'login): `ssh HOST \'cat > /dev/null\' < FILE` and `ssh HOST \'cat FILE\' > /dev/null`, '
      'the floor the issue\'s target names, and the same writing the file at the other end '
      '(`cat > FILE`), which every contender has to do. Load average at the start / end: %s / %s (%d CPUs, shared).'
      % (compare.PYTHON_MITOGEN_VERSION, args.rounds, EXT4_RECENT_S, loads[0], loads[-1],
         info['nproc']))
    w('')
    for name, got in results.items():
        out.extend(render_place(got['place'], got['rounds'], args))
    if rss:
        py_rounds = {name: got['rounds']['Python Mitogen'] for name, got in results.items()}
        out.extend(render_rss(rss, py_rounds, args))
    w('%s; Python %s; commit `%s`; %s; %s.' % (info['rustc'], info['python'], info['commit'],
                                                info['cpu'], info['date']))
    w('')
    w('Rerun (as root; needs rsync, scp, sftp, sshd):')
    w('')
    w('```sh')
    w(rerun)
    w('```')
    w(FILES_END)
    return '\n'.join(out)


def write_section(path, section):
    """The section, keeping the hand-written notes of the one it replaces."""
    old = compare.existing_section(path, FILES_BEGIN, FILES_END) or ''
    nb, ne = old.find(NOTES_BEGIN), old.find(NOTES_END)
    if nb >= 0 and ne > nb:
        notes = old[nb:ne + len(NOTES_END)]
        section = section.replace(FILES_END, notes + '\n' + FILES_END)
    compare.write_section(path, FILES_BEGIN, FILES_END, section)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds (default 3)')
    p.add_argument('--mib', type=int, default=1024, help='MiB of the large file (default 1024)')
    p.add_argument('--tree-files', type=int, default=1000,
                   help='files of 1 KiB in the tree (default 1000)')
    p.add_argument('--rss-mib', type=int, default=4096,
                   help='MiB of the file of the peak-memory run (default 4096; 0: none)')
    p.add_argument('--no-ssh', action='store_true', help='locally only')
    p.add_argument('--json', action='store_true', help='print JSON instead of the tables')
    p.add_argument('--no-write', action='store_true', help='leave docs/performance.md alone')
    p.add_argument('--output', default=os.path.join('docs', 'performance.md'))
    args = p.parse_args()
    if args.rounds < 1 or args.mib < 1 or args.tree_files < 1 or args.rss_mib < 0:
        p.error('--rounds, --mib and --tree-files must be >= 1, --rss-mib >= 0')
    if not args.no_ssh and os.geteuid() != 0:
        p.error('over ssh needs root: it starts its own sshd (or use --no-ssh)')
    missing = [t for t in ('cp', 'rsync', 'scp', 'sftp', 'ssh') if not shutil.which(t)]
    if missing:
        p.error('missing: %s (apt-get install rsync openssh-client)' % ', '.join(missing))
    return args


def main():
    args = parse_args()
    stop_on_sigterm()
    ours_bin, _ = compare.build()
    py = compare.python_venv()
    loads = [load()]
    work = tempfile.mkdtemp(prefix='mitogen-files-bench-')
    try:
        log('making %d MiB and %d files in %s' % (args.mib, args.tree_files, work))
        make_source(os.path.join(work, 'src.bin'), args.mib)
        make_tree(os.path.join(work, 'tree'), args.tree_files)
        results, rss = {}, {}
        local = Place('local', ours_bin, py, work, args)
        results['local'] = {'place': local, 'rounds': run_rounds(local, args.rounds)}
        if args.rss_mib:
            rss['local'] = local.ours(args.rss_mib)
        if not args.no_ssh:
            with ThrowawaySshd() as sshd:
                over = Place('ssh', ours_bin, py, work, args, sshd)
                results['ssh'] = {'place': over, 'rounds': run_rounds(over, args.rounds)}
                if args.rss_mib:
                    rss['ssh'] = over.ours(args.rss_mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads.append(load())

    rerun = 'python3 benches/files.py'
    for flag, value, default in (('--rounds', args.rounds, 3), ('--mib', args.mib, 1024),
                                 ('--tree-files', args.tree_files, 1000),
                                 ('--rss-mib', args.rss_mib, 4096)):
        if value != default:
            rerun += ' %s %d' % (flag, value)
    if args.no_ssh:
        rerun += ' --no-ssh'
    section = render(results, rss, compare.machine(), args, rerun, loads)
    if args.json:
        print(json.dumps({'rounds': {k: v['rounds'] for k, v in results.items()},
                          'rss': rss, 'load': loads}))
    else:
        print(section)
    if not args.no_write:
        path = os.path.join(ROOT, args.output)
        write_section(path, section)
        log('wrote the files section of %s' % os.path.relpath(path, ROOT))


if __name__ == '__main__':
    main()
