#!/usr/bin/env python3
"""`mitogen run TARGET -- true` with a fresh ssh login against one that rides
a kept login (`--reuse`; and over ssh's own kept login, given with `-o`,
which skips mitogen's `ssh -G` query), next to `ssh HOST true` without and
with ControlMaster, on a throw-away sshd on 127.0.0.1 (benches/throwaway_sshd.py;
needs root or a user sshd accepts, and /usr/sbin/sshd).

The five are interleaved, one of each per round, so load on the machine
falls on all alike; medians and the ratios of medians are printed as a
Markdown table, written into docs/performance.md ("Keeping ssh logins
between commands"; --no-write only prints it). The program is
in the remote cache before the first round, and both kept logins (mitogen's
and ssh's own) are made before it too, so the rounds measure steady state.

    cargo build --release -p mitogen-cli
    python3 benches/reuse.py --rounds 10
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
from throwaway_sshd import ThrowawaySshd, stop_on_sigterm  # noqa: E402
import compare  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv, env):
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--bin', default='target/x86_64-unknown-linux-gnu/release/mitogen')
    ap.add_argument('--rounds', type=int, default=10)
    ap.add_argument('--output', default=os.path.join(ROOT, 'docs', 'performance.md'))
    ap.add_argument('--no-write', action='store_true', help='print the table only')
    args = ap.parse_args()
    stop_on_sigterm()
    runtime = tempfile.mkdtemp(prefix='mr-')
    os.chmod(runtime, 0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
    env.pop('MITOGEN_REUSE', None)
    cm = os.path.join(runtime, 'cm-%C')
    try:
        with ThrowawaySshd() as sshd:
            opts = [a for o in sshd.ssh_options() for a in ('-o', o)]
            mitogen = [args.bin, 'run'] + opts
            target = [sshd.target(), '--', 'true']
            ssh = ['ssh', '-F', '/dev/null'] + sshd.ssh_args()
            cases = [
                ('mitogen run (new login, --no-reuse)', mitogen + ['--no-reuse'] + target),
                ('mitogen run (kept login, --reuse)', mitogen + ['--reuse', '60'] + target),
                ('mitogen run (kept login, own -o Control*: no ssh -G)', mitogen
                 + ['-o', 'ControlMaster=auto', '-o', 'ControlPath=' + cm,
                    '-o', 'ControlPersist=60'] + target),
                ('ssh HOST true (ControlMaster=no)', ['ssh', '-o', 'ControlMaster=no']
                 + ssh[1:] + ['true']),
                ('ssh HOST true (ControlMaster, kept)', ['ssh', '-o', 'ControlMaster=auto',
                 '-o', 'ControlPath=' + cm, '-o', 'ControlPersist=60'] + ssh[1:] + ['true']),
            ]
            for _, argv in cases:  # cache filled, both masters made
                timed(argv, env)
            samples = {label: [] for label, _ in cases}
            for _ in range(args.rounds):
                for label, argv in cases:
                    samples[label].append(timed(argv, env))
            for _, argv in cases[4:]:
                subprocess.run(['ssh', '-O', 'exit'] + argv[1:-1], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(['ssh', '-O', 'exit', '-o', 'ControlPath=%s/mitogen/ssh/%%C'
                            % runtime] + ssh[1:], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    base = medians[cases[0][0]]
    load = ' '.join(open('/proc/loadavg').read().split()[:3])
    out = [compare.REUSE_BEGIN,
           '## Keeping ssh logins between commands',
           '',
           '`mitogen run TARGET -- true` (release build, the program already in the '
           'remote cache) logging in afresh (`--no-reuse`) and over a login kept by an '
           'earlier command (`--reuse`, docs/cli.md), and over ssh\'s own kept login given '
           'with `-o ControlMaster=auto -o ControlPath=… -o ControlPersist=60` (mitogen adds '
           'nothing then, and asks no `ssh -G`); next to `ssh HOST true` without and with '
           'a kept login. A throw-away sshd on 127.0.0.1 (benches/throwaway_sshd.py), '
           '%d interleaved rounds of the five, medians; from start to exit. Load average '
           'at the end: %s (%d cores)%s.'
           % (args.rounds, load, os.cpu_count(),
              ': **under load** from other work, so the times are long and only the '
              'ratios within the run mean much' if float(load.split()[0]) > 1 else ''),
           '',
           '| command | median ms | min–max ms | vs a new login |',
           '|---|---:|---:|---:|']
    for label, _ in cases:
        v = samples[label]
        out.append('| %s | %.1f | %.1f–%.1f | %.2fx |'
                   % (label, medians[label], min(v), max(v), medians[label] / base))
    out += ['',
            'Rerun: `cargo build --release -p mitogen-cli && python3 benches/reuse.py '
            '--rounds %d` (as root, or a user the throw-away sshd accepts).' % args.rounds,
            compare.REUSE_END]
    section = '\n'.join(out)
    print(section)
    if not args.no_write:
        compare.write_section(args.output, compare.REUSE_BEGIN, compare.REUSE_END, section,
                              before=('## Release binary sizes',))


if __name__ == '__main__':
    main()
