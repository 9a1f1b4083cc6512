#!/usr/bin/env python3
"""Benchmark mitogen-rs against Python Mitogen side by side.

Builds `mitogen` (and the quickstart example, for its size) in release mode,
makes the Python venv (benches/python/setup_venv.sh), then runs
`mitogen bench --json` and benches/python/bench_mitogen.py alternately for
--rounds rounds, so drift in the machine's state (frequency, other load)
affects both alike. Takes the median of every key over the rounds and writes
docs/performance.md.

Usage: python3 benches/compare.py [--rounds 3] [--mib 256] [--quick] [--output PATH]
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# key, label, unit, whether lower is better, the target (None = none)
KEYS = [
    ('connect_ms', 'connect: new context + its first call', 'ms', True, 5.0),
    ('rtt_us', 'round trip of one no-op call', 'µs', True, 20.0),
    ('pipelined_calls_per_s', 'pipelined no-op calls', 'calls/s', False, 200_000.0),
    ('throughput_mib_s', 'streaming child → master, 1 MiB chunks', 'MiB/s', False, 1.5 * 1024),
    ('child_rss_kib', 'child VmRSS after the calls', 'KiB', True, 4 * 1024.0),
]

TARGET_TEXT = {
    'connect_ms': '≤ 5 ms',
    'rtt_us': '≤ 20 µs',
    'pipelined_calls_per_s': '≥ 200,000/s',
    'throughput_mib_s': '≥ 1.5 GiB/s',
    'child_rss_kib': '≤ 4 MiB',
}

PYTHON_MITOGEN_VERSION = '0.3.54'
RUN_TIMEOUT = 900


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log('+ ' + ' '.join(shlex.quote(c) for c in cmd))
    return subprocess.run(cmd, cwd=ROOT, check=True, timeout=RUN_TIMEOUT, **kw)


def output(cmd):
    return run(cmd, stdout=subprocess.PIPE, text=True).stdout


def target_dir():
    meta = json.loads(output(['cargo', 'metadata', '--format-version', '1', '--no-deps']))
    return meta['target_directory']


def build():
    run(['cargo', 'build', '--release', '-p', 'mitogen-cli', '--bin', 'mitogen'])
    run(['cargo', 'build', '--release', '-p', 'mitogen', '--example', 'quickstart'])
    release = os.path.join(target_dir(), 'release')
    return os.path.join(release, 'mitogen'), os.path.join(release, 'examples', 'quickstart')


def python_venv():
    lines = output([os.path.join(ROOT, 'benches', 'python', 'setup_venv.sh')]).strip().splitlines()
    return lines[-1]


def bench_json(cmd):
    out = output(cmd).strip().splitlines()
    return json.loads(out[-1])


def median(values):
    return statistics.median(values)


def fmt(key, value):
    if key == 'connect_ms':
        return '%.2f' % value
    if key == 'rtt_us':
        return '%.1f' % value
    if key == 'child_rss_kib':
        return '{:,.0f}'.format(value)
    return '{:,.0f}'.format(value)


def ratio_text(ours, theirs, lower_is_better):
    if ours <= 0 or theirs <= 0:
        return 'n/a'
    r = theirs / ours if lower_is_better else ours / theirs
    if r >= 1:
        return '**%.1f× better**' % r
    return '%.2f× (worse)' % r


def meets(value, target, lower_is_better):
    ok = value <= target if lower_is_better else value >= target
    return 'yes' if ok else 'no'


def machine():
    cpu = ''
    try:
        with open('/proc/cpuinfo') as fp:
            for line in fp:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    uname = platform.uname()
    rustc = output(['rustc', '--version']).strip()
    commit = output(['git', 'rev-parse', '--short', 'HEAD']).strip()
    if output(['git', 'status', '--porcelain', '--untracked-files=no']).strip():
        commit += ' plus uncommitted changes'
    return {
        'nproc': os.cpu_count(),
        'cpu': cpu or 'unknown',
        'kernel': '%s %s %s' % (uname.system, uname.release, uname.machine),
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'rustc': rustc,
        'python': platform.python_version(),
        'commit': commit,
    }


def render(ours, theirs, rounds_ours, rounds_theirs, sizes, info, args, rerun):
    out = []
    w = out.append
    w('# Performance: mitogen-rs vs Python Mitogen')
    w('')
    w('Local contexts (`local` target) on one machine. Every figure is the median over '
      '%d interleaved round(s) of each benchmark, and each round\'s figure is itself a '
      'median over repetitions (see `mitogen bench --help` and '
      '`benches/python/bench_mitogen.py`, which define the keys identically).'
      % args.rounds)
    w('')
    w('The ratio is always stated so that **> 1 means mitogen-rs is better**: '
      'Python ÷ ours where lower is better (time, memory), ours ÷ Python where higher '
      'is better (rates).')
    w('')
    w('| key | what | mitogen-rs | Python Mitogen %s | ratio | target | target met |'
      % PYTHON_MITOGEN_VERSION)
    w('|---|---|---:|---:|---:|---|:---:|')
    for key, label, unit, lower, target in KEYS:
        w('| `%s` | %s (%s, %s is better) | %s | %s | %s | %s | %s |' % (
            key, label, unit, 'lower' if lower else 'higher',
            fmt(key, ours[key]), fmt(key, theirs[key]),
            ratio_text(ours[key], theirs[key], lower),
            TARGET_TEXT[key], meets(ours[key], target, lower)))
    w('')
    w('## Release binary sizes')
    w('')
    w('Stripped release builds (the workspace\'s `[profile.release]`); this is what a '
      'master ships to a remote host the first time.')
    w('')
    w('| binary | bytes | MiB |')
    w('|---|---:|---:|')
    for name, size in sizes:
        w('| `%s` | {:,} | %.2f |'.format(size) % (name, size / 1048576.0))
    w('')
    w('## Every round')
    w('')
    w('| round | side | ' + ' | '.join('`%s`' % k for k, *_ in KEYS) + ' |')
    w('|---|---|' + '---:|' * len(KEYS))
    for i, (o, t) in enumerate(zip(rounds_ours, rounds_theirs), 1):
        w('| %d | mitogen-rs | ' % i + ' | '.join(fmt(k, o[k]) for k, *_ in KEYS) + ' |')
        w('| %d | Python | ' % i + ' | '.join(fmt(k, t[k]) for k, *_ in KEYS) + ' |')
    w('')
    w('## Machine')
    w('')
    w('* CPUs (nproc): %s' % info['nproc'])
    w('* CPU: %s' % info['cpu'])
    w('* kernel: %s' % info['kernel'])
    w('* date: %s' % info['date'])
    w('* %s; Python %s; commit `%s`' % (info['rustc'], info['python'], info['commit']))
    w('* MiB streamed per throughput run: %d%s' % (args.mib, '; quick mode' if args.quick else ''))
    w('')
    w('## Rerun')
    w('')
    w('```sh')
    w(rerun)
    w('```')
    w('')
    w('It builds `mitogen` in release mode, creates the Python venv on first use '
      '(`target/py-venv`, pip package `mitogen==%s`), runs both benchmarks '
      'alternately and rewrites this file. The Rust side alone: '
      '`cargo run --release -p mitogen-cli -- bench` (add `--json` for one JSON object).'
      % PYTHON_MITOGEN_VERSION)
    w('')
    return '\n'.join(out)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds (default 3)')
    p.add_argument('--mib', type=int, default=256, help='MiB per throughput run (default 256)')
    p.add_argument('--quick', action='store_true',
                   help='fewer repetitions in both benchmarks (a smoke test)')
    p.add_argument('--output', default=os.path.join('docs', 'performance.md'),
                   help='file to write, relative to the repository (default docs/performance.md)')
    args = p.parse_args()
    if args.rounds < 1 or args.mib < 1:
        p.error('--rounds and --mib must be >= 1')
    return args


def main():
    args = parse_args()
    ours_bin, quickstart_bin = build()
    py = python_venv()

    common = ['--mib', str(args.mib)] + (['--quick'] if args.quick else [])
    ours_cmd = [ours_bin, 'bench', '--json'] + common
    theirs_cmd = [py, os.path.join(ROOT, 'benches', 'python', 'bench_mitogen.py')] + common

    rounds_ours, rounds_theirs = [], []
    for i in range(args.rounds):
        log('round %d of %d' % (i + 1, args.rounds))
        # Alternate which side goes first, so neither always runs on a machine
        # the other has just warmed up (or heated).
        if i % 2 == 0:
            rounds_ours.append(bench_json(ours_cmd))
            rounds_theirs.append(bench_json(theirs_cmd))
        else:
            rounds_theirs.append(bench_json(theirs_cmd))
            rounds_ours.append(bench_json(ours_cmd))
        log('  mitogen-rs: %s' % json.dumps(rounds_ours[-1]))
        log('  Python:     %s' % json.dumps(rounds_theirs[-1]))

    ours = {k: median([r[k] for r in rounds_ours]) for k, *_ in KEYS}
    theirs = {k: median([r[k] for r in rounds_theirs]) for k, *_ in KEYS}
    sizes = [
        ('mitogen', os.path.getsize(ours_bin)),
        ('examples/quickstart', os.path.getsize(quickstart_bin)),
    ]

    rerun = 'python3 benches/compare.py'
    if args.rounds != 3:
        rerun += ' --rounds %d' % args.rounds
    if args.mib != 256:
        rerun += ' --mib %d' % args.mib
    if args.quick:
        rerun += ' --quick'
    if os.path.normpath(args.output) != os.path.join('docs', 'performance.md'):
        rerun += ' --output %s' % shlex.quote(args.output)
    text = render(ours, theirs, rounds_ours, rounds_theirs, sizes, machine(), args, rerun)
    path = os.path.join(ROOT, args.output)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as fp:
        fp.write(text)
    log('wrote %s' % os.path.relpath(path, ROOT))
    print(json.dumps({'mitogen_rs': ours, 'python_mitogen': theirs,
                      'sizes': dict(sizes)}))


if __name__ == '__main__':
    main()
