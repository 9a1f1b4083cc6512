#!/usr/bin/env python3
"""`mitogen copy` against `scp -r` and `rsync -a` over loopback ssh, to 1 and
to 3 targets: a tree of 1,000 files of 1 KiB, a 256 MiB file, and the tree
again unchanged (scp has no such case: it sends everything every time).

Each target is a throw-away sshd (benches/throwaway_sshd.py) in a mount
namespace of its own, in which the destination directory is a directory of
that target's, so three "hosts" on one machine get three copies at one path,
as three real hosts would. The three scp or rsync commands run at once (as
pscp and a shell loop with `&` run them); `mitogen copy` is one command with
three targets. Every timed run starts with the destinations emptied (except
the unchanged case) and after sync(2); the programs run interleaved, round
by round, and the medians are printed as a Markdown table.

Run as root: python3 benches/cli_copy.py [--rounds 3] [--bin PATH]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throwaway_sshd  # noqa: E402
from throwaway_sshd import ThrowawaySshd, stop_on_sigterm  # noqa: E402
from files import make_source, make_tree  # noqa: E402

DEST = '/tmp/mitogen-cli-copy-bench-dest'
RUN_TIMEOUT = 600


def timed_all(cmds):
    """Seconds from starting every command at once until the last exits."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
             for c in cmds]
    for p, c in zip(procs, cmds):
        if p.wait(timeout=RUN_TIMEOUT) != 0:
            raise RuntimeError('failed (%d): %s' % (p.returncode, ' '.join(c)))
    return time.perf_counter() - t0


def start_targets(n, work):
    """`n` sshd servers, each in a mount namespace where DEST is its own
    directory under `work`."""
    os.makedirs(DEST, exist_ok=True)
    servers = []
    for i in range(n):
        own = os.path.join(work, 'host%d' % i)
        os.makedirs(own)
        wrapper = os.path.join(work, 'sshd%d.sh' % i)
        with open(wrapper, 'w') as fp:
            fp.write('#!/bin/sh\nexec unshare --mount --propagation private sh -c '
                     '\'mount --bind "$0" "$1" && shift && exec /usr/sbin/sshd "$@"\' '
                     '%s %s "$@"\n' % (own, DEST))
        os.chmod(wrapper, 0o755)
        throwaway_sshd.SSHD = wrapper
        s = ThrowawaySshd()
        s.__enter__()
        s.own = own
        servers.append(s)
    return servers


def cases(mitogen, servers, src):
    """The commands of each tool to copy `src` to DEST on every server."""
    def opts(servers):
        out = []
        for o in dict.fromkeys(o for s in servers for o in s.ssh_options()):
            out += ['-o', o]  # each server's key: ssh tries them in turn
        return out + ['-o', 'LogLevel=ERROR']
    ours = [[mitogen, 'copy'] + opts(servers) + [s.target() for s in servers]
            + ['--', src, DEST + '/']]
    scp = [['scp', '-q', '-r', '-p', '-P', str(s.port)] + opts([s])
           + [src, 'root@127.0.0.1:%s/' % DEST] for s in servers]
    rsync = [['rsync', '-a', '-e', ' '.join(['ssh', '-p', str(s.port)] + opts([s])),
              src, 'root@127.0.0.1:%s/' % DEST] for s in servers]
    return {'mitogen copy': ours, 'scp -r': scp, 'rsync -a': rsync}


def empty(servers):
    for s in servers:
        for e in os.listdir(s.own):
            p = os.path.join(s.own, e)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    os.sync()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--bin', default='target/x86_64-unknown-linux-gnu/release/mitogen')
    ap.add_argument('--mib', type=int, default=256)
    ap.add_argument('--files', type=int, default=1000)
    args = ap.parse_args()
    stop_on_sigterm()
    mitogen = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix='mitogen-cli-copy-bench-')
    servers = []
    try:
        tree = os.path.join(work, 'src', 'tree')
        big = os.path.join(work, 'src', 'big.bin')
        make_tree(tree, args.files)
        make_source(big, args.mib)
        servers = start_targets(3, work)
        results = {}  # (what, n, tool) -> [seconds]
        for n in (1, 3):
            # Untimed: every server's cache gets the program.
            for cmd in cases(mitogen, servers[:n], big)['mitogen copy']:
                subprocess.run(cmd, check=True, timeout=RUN_TIMEOUT,
                               stdout=subprocess.DEVNULL)
        tree_what = '%s files' % format(args.files, ',')
        for r in range(args.rounds):
            for n in (1, 3):
                for what, src in ((tree_what, tree), ('%d MiB file' % args.mib, big)):
                    tools = list(cases(mitogen, servers[:n], src).items())
                    # Interleaved: the order turns each round.
                    k = r % len(tools)
                    for tool, cmds in tools[k:] + tools[:k]:
                        empty(servers)
                        t = timed_all(cmds)
                        results.setdefault((what, n, tool), []).append(t)
                        if src == tree and tool != 'scp -r':
                            # The same again, nothing changed.
                            os.sync()
                            t = timed_all(cmds)
                            results.setdefault((tree_what + ' unchanged', n, tool), []).append(t)
                    print('round %d, %d target(s), %s done' % (r + 1, n, what), file=sys.stderr)
        print('| copy | targets | mitogen copy | scp -r | rsync -a | mitogen / scp | mitogen / rsync |')
        print('|---|---|---|---|---|---|---|')
        for what in (tree_what, '%d MiB file' % args.mib, tree_what + ' unchanged'):
            for n in (1, 3):
                med = {tool: statistics.median(v) for (w, k, tool), v in results.items()
                       if w == what and k == n}
                ours = med['mitogen copy']
                cell = lambda tool: '%.0f ms' % (med[tool] * 1e3) if tool in med else '–'  # noqa: E731
                ratio = lambda tool: '%.2f' % (ours / med[tool]) if tool in med else '–'  # noqa: E731
                print('| %s | %d | %s | %s | %s | %s | %s |' % (
                    what, n, cell('mitogen copy'), cell('scp -r'), cell('rsync -a'),
                    ratio('scp -r'), ratio('rsync -a')))
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
