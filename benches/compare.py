#!/usr/bin/env python3
"""Benchmark mitogen-rs against Python Mitogen side by side.

Builds `mitogen` (and the quickstart example, for its size) in release mode,
makes the Python venv (benches/python/setup_venv.sh), then runs
`mitogen bench --json` and benches/python/bench_mitogen.py alternately for
--rounds rounds, so drift in the machine's state (frequency, other load)
affects both alike. Takes the median of every key over the rounds and writes
docs/performance.md.

With --ssh it also starts a throw-away sshd on a random 127.0.0.1 port
(benches/throwaway_sshd.py; needs root and /usr/sbin/sshd), benchmarks both
over ssh to it the same way, next to the floors that plain ssh gives in the
same runs (`ssh HOST true`, `ssh HOST 'cat > /dev/null'`), and writes a second
table. Without --ssh, the ssh section already in the output file is kept.

Usage: python3 benches/compare.py [--ssh] [--rounds 3] [--mib 256] [--quick] [--output PATH]
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

# The ssh section lies between these markers, so that a run without --ssh can
# keep the one already in the file.
SSH_BEGIN = '<!-- ssh section: written by benches/compare.py --ssh -->'
SSH_END = '<!-- end of ssh section -->'

# The targets over ssh, relative to the floors measured in the same run.
SSH_WARM_OVER_FLOOR_MS = 15.0
SSH_COLD_OVER_FLOOR_MS = 60.0
SSH_RTT_US = 60.0
SSH_CAT_FRACTION = 0.90
SSH_RSS_KIB = 4 * 1024.0

# Keys of `mitogen bench --json` over ssh, in table order.
SSH_KEYS = ['connect_ms', 'connect_cold_ms', 'ssh_floor_ms', 'rtt_us',
            'pipelined_calls_per_s', 'throughput_mib_s', 'cat_mib_s', 'pull_mib_s',
            'child_rss_kib']


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


# The program as it is meant to be shipped: a static release build, which runs
# on any Linux of the architecture and maps no shared libraries (smaller child
# RSS). An explicit --target keeps the flag off build scripts and proc macros,
# which cannot be static.
STATIC_TARGET = 'x86_64-unknown-linux-gnu'


def build():
    env = dict(os.environ)
    cmd_target = []
    subdir = 'release'
    if platform.machine() == 'x86_64' and sys.platform.startswith('linux'):
        env['RUSTFLAGS'] = (env.get('RUSTFLAGS', '') + ' -C target-feature=+crt-static').strip()
        cmd_target = ['--target', STATIC_TARGET]
        subdir = os.path.join(STATIC_TARGET, 'release')
    run(['cargo', 'build', '--release', *cmd_target, '-p', 'mitogen-cli', '--bin', 'mitogen'], env=env)
    run(['cargo', 'build', '--release', *cmd_target, '-p', 'mitogen', '--example', 'quickstart'], env=env)
    release = os.path.join(target_dir(), subdir)
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
    if value is None:
        return '–'
    if key in ('connect_ms', 'connect_cold_ms', 'ssh_floor_ms'):
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


def signed_ms(value):
    return '%+.1f ms' % value


def render_ssh(rounds_ours, rounds_theirs, args, ssh_version, user):
    """The ssh section: ours and Python's figures next to the floors."""
    def med(rounds, key):
        values = [r[key] for r in rounds if r.get(key) is not None]
        return median(values) if values else None

    def med_of(rounds, f):
        return median([f(r) for r in rounds])

    ours = {k: med(rounds_ours, k) for k in SSH_KEYS}
    theirs = {k: med(rounds_theirs, k) for k in SSH_KEYS}
    # Differences and fractions are taken within each run, then the median
    # over rounds: each run's figure is compared with the floor measured
    # beside it, not with another run's.
    warm_over = med_of(rounds_ours, lambda r: r['connect_ms'] - r['ssh_floor_ms'])
    cold_over = med_of(rounds_ours, lambda r: r['connect_cold_ms'] - r['ssh_floor_ms'])
    py_over = med_of(rounds_theirs, lambda r: r['connect_ms'] - r['ssh_floor_ms'])
    cat_frac = med_of(rounds_ours, lambda r: r['throughput_mib_s'] / r['cat_mib_s'])
    py_cat_frac = med_of(rounds_theirs, lambda r: r['throughput_mib_s'] / r['cat_mib_s'])
    pull_frac = med_of(rounds_ours, lambda r: r['throughput_mib_s'] / r['pull_mib_s'])
    py_pull_frac = med_of(rounds_theirs, lambda r: r['throughput_mib_s'] / r['pull_mib_s'])

    def yes(ok):
        return 'yes' if ok else '**no**'

    out = []
    w = out.append
    w(SSH_BEGIN)
    w('## Over ssh')
    w('')
    w('Both sides connect over ssh to a throw-away `sshd` on 127.0.0.1 (a random port, '
      'keys made for the run, logging in as %s; %s), no ssh compression. Every figure '
      'is the median over %d interleaved round(s). Each benchmark also times plain ssh '
      'with the same options in the same run: `ssh HOST true` (one sample before each '
      'timed connect, or each cold/warm pair of them) and `ssh HOST \'cat > /dev/null\'` taking the same %d MiB (one '
      'run after each throughput run, timed from the remote shell\'s first output, so '
      'without the login, until ssh exits). Those are the floors: what ssh itself '
      'costs. The targets are those of the ssh issue.'
      % (user, ssh_version, args.rounds, args.mib))
    w('')
    w('| key | what | mitogen-rs | Python Mitogen %s | ratio | floor, same runs (mitogen-rs / Python) '
      '| mitogen-rs vs floor | Python vs floor | target | target met |'
      % PYTHON_MITOGEN_VERSION)
    w('|---|---|---:|---:|---:|---:|---:|---:|---|:---:|')
    floor_ms = '%s / %s ms' % (fmt('ssh_floor_ms', ours['ssh_floor_ms']),
                               fmt('ssh_floor_ms', theirs['ssh_floor_ms']))
    cat = 'cat %s / %s, pull %s / %s MiB/s' % (
        fmt('cat_mib_s', ours['cat_mib_s']), fmt('cat_mib_s', theirs['cat_mib_s']),
        fmt('pull_mib_s', ours['pull_mib_s']), fmt('pull_mib_s', theirs['pull_mib_s']))

    def of_floors(cat_f, pull_f):
        return '%.0f %% of cat, %.0f %% of pull' % (100 * cat_f, 100 * pull_f)
    rows = [
        ('connect_ms', 'warm connect: new context (program cached) + its first call (ms)',
         ratio_text(ours['connect_ms'], theirs['connect_ms'], True), floor_ms,
         signed_ms(warm_over), signed_ms(py_over),
         '≤ floor + %.0f ms' % SSH_WARM_OVER_FLOOR_MS,
         yes(warm_over <= SSH_WARM_OVER_FLOOR_MS)),
        ('connect_cold_ms', 'cold connect: remote cache emptied first, program uploaded (ms)',
         'n/a¹', floor_ms, signed_ms(cold_over), 'n/a¹',
         '≤ floor + %.0f ms' % SSH_COLD_OVER_FLOOR_MS,
         yes(cold_over <= SSH_COLD_OVER_FLOOR_MS)),
        ('rtt_us', 'round trip of one no-op call (µs)',
         ratio_text(ours['rtt_us'], theirs['rtt_us'], True), '–', '–', '–',
         '≤ %.0f µs' % SSH_RTT_US, yes(ours['rtt_us'] <= SSH_RTT_US)),
        ('pipelined_calls_per_s', 'pipelined no-op calls (calls/s)',
         ratio_text(ours['pipelined_calls_per_s'], theirs['pipelined_calls_per_s'], False),
         '–', '–', '–', '–', '–'),
        ('throughput_mib_s', 'streaming child → master, 1 MiB chunks (MiB/s)',
         ratio_text(ours['throughput_mib_s'], theirs['throughput_mib_s'], False), cat,
         of_floors(cat_frac, pull_frac), of_floors(py_cat_frac, py_pull_frac),
         '≥ %.0f %% of ssh cat' % (100 * SSH_CAT_FRACTION),
         yes(cat_frac >= SSH_CAT_FRACTION)),
        ('child_rss_kib', 'child VmRSS after the calls (KiB)',
         ratio_text(ours['child_rss_kib'], theirs['child_rss_kib'], True), '–', '–', '–',
         '≤ 4 MiB', yes(ours['child_rss_kib'] <= SSH_RSS_KIB)),
    ]
    for key, what, ratio, floor, ours_vs, theirs_vs, target, met in rows:
        w('| `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            key, what, fmt(key, ours[key]), fmt(key, theirs[key]), ratio, floor,
            ours_vs, theirs_vs, target, met))
    w('')
    w('¹ Python Mitogen keeps no cache on the remote: every connection sends its '
      'modules again, so its `connect_ms` is its cold and warm connect alike.')
    w('')
    w('"vs floor" is taken within each run (the connect minus that run\'s `ssh true`, '
      'the streaming rate over that run\'s ssh transfers), then the median over rounds. '
      'The issue\'s throughput target is stated against `ssh HOST \'cat > /dev/null\'`, '
      'which moves data master → remote; the streaming benchmark moves it the other '
      'way, child (remote) → master, so the table also shows `pull`: plain ssh '
      'delivering the same MiB from the remote to the master '
      '(`ssh HOST \'dd if=/dev/zero bs=1M count=N\'`), the like-for-like floor.')
    w('')
    w('### Every round over ssh')
    w('')
    w('| round | side | ' + ' | '.join('`%s`' % k for k in SSH_KEYS) + ' |')
    w('|---|---|' + '---:|' * len(SSH_KEYS))
    for i, (o, t) in enumerate(zip(rounds_ours, rounds_theirs), 1):
        w('| %d | mitogen-rs | ' % i + ' | '.join(fmt(k, o.get(k)) for k in SSH_KEYS) + ' |')
        w('| %d | Python | ' % i + ' | '.join(fmt(k, t.get(k)) for k in SSH_KEYS) + ' |')
    w('')
    w('Rerun: `python3 benches/compare.py --ssh` (as root; it also reruns the local '
      'table). The Rust side alone, against any host: `mitogen bench --target HOST '
      '[-F FILE] [-o OPTION]...` (add `--json` for one JSON object).')
    w(SSH_END)
    return '\n'.join(out)


def existing_ssh_section(path):
    """The ssh section of an earlier run, kept when this run has none."""
    try:
        with open(path) as fp:
            text = fp.read()
    except OSError:
        return None
    begin, end = text.find(SSH_BEGIN), text.find(SSH_END)
    if begin < 0 or end < begin:
        return None
    return text[begin:end + len(SSH_END)]


def render(ours, theirs, rounds_ours, rounds_theirs, sizes, info, args, rerun, ssh_section):
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
    if ssh_section:
        w(ssh_section)
        w('')
    w('## Release binary sizes')
    w('')
    w('Stripped, static release builds (the workspace\'s `[profile.release]`, built with '
      '`RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target '
      'x86_64-unknown-linux-gnu`); this is what a master ships to a remote host the first time, '
      'and it runs on any x86-64 Linux.')
    w('')
    w('| binary | bytes | MiB |')
    w('|---|---:|---:|')
    for name, size in sizes:
        w('| `%s` | {:,} | %.2f |'.format(size) % (name, size / 1048576.0))
    w('')
    w('## Every round (local)')
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
    p.add_argument('--ssh', action='store_true',
                   help='also compare over ssh to a throw-away sshd (needs root)')
    p.add_argument('--output', default=os.path.join('docs', 'performance.md'),
                   help='file to write, relative to the repository (default docs/performance.md)')
    args = p.parse_args()
    if args.rounds < 1 or args.mib < 1:
        p.error('--rounds and --mib must be >= 1')
    if args.ssh and os.geteuid() != 0:
        p.error('--ssh needs root: it starts its own sshd')
    return args


def interleaved(ours_cmd, theirs_cmd, rounds, label):
    """Runs both benchmarks alternately; returns their JSON objects."""
    rounds_ours, rounds_theirs = [], []
    for i in range(rounds):
        log('%s round %d of %d' % (label, i + 1, rounds))
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
    return rounds_ours, rounds_theirs


def ssh_rounds(ours_bin, py, common, args):
    """Both benchmarks over ssh to a throw-away sshd; returns the section."""
    sys.path.insert(0, os.path.join(ROOT, 'benches'))
    from throwaway_sshd import ThrowawaySshd, stop_on_sigterm

    stop_on_sigterm()
    version = subprocess.run(['ssh', '-V'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=30).stdout.strip()
    with ThrowawaySshd() as sshd:
        ours_cmd = [ours_bin, 'bench', '--json', '--target', sshd.target()] + common
        for opt in sshd.ssh_options():
            ours_cmd += ['-o', opt]
        theirs_cmd = [py, os.path.join(ROOT, 'benches', 'python', 'bench_mitogen.py'),
                      '--ssh', '127.0.0.1', '--ssh-port', str(sshd.port),
                      '--ssh-user', sshd.user, '--identity', sshd.client_key] + common
        rounds_ours, rounds_theirs = interleaved(ours_cmd, theirs_cmd, args.rounds, 'ssh')
        return render_ssh(rounds_ours, rounds_theirs, args, version, sshd.user)


def main():
    args = parse_args()
    ours_bin, quickstart_bin = build()
    py = python_venv()

    common = ['--mib', str(args.mib)] + (['--quick'] if args.quick else [])
    ours_cmd = [ours_bin, 'bench', '--json'] + common
    theirs_cmd = [py, os.path.join(ROOT, 'benches', 'python', 'bench_mitogen.py')] + common

    rounds_ours, rounds_theirs = interleaved(ours_cmd, theirs_cmd, args.rounds, 'local')
    path = os.path.join(ROOT, args.output)
    if args.ssh:
        ssh_section = ssh_rounds(ours_bin, py, common, args)
    else:
        ssh_section = existing_ssh_section(path)

    ours = {k: median([r[k] for r in rounds_ours]) for k, *_ in KEYS}
    theirs = {k: median([r[k] for r in rounds_theirs]) for k, *_ in KEYS}
    sizes = [
        ('mitogen', os.path.getsize(ours_bin)),
        ('examples/quickstart', os.path.getsize(quickstart_bin)),
    ]

    rerun = 'python3 benches/compare.py'
    if args.ssh:
        rerun += ' --ssh'
    if args.rounds != 3:
        rerun += ' --rounds %d' % args.rounds
    if args.mib != 256:
        rerun += ' --mib %d' % args.mib
    if args.quick:
        rerun += ' --quick'
    if os.path.normpath(args.output) != os.path.join('docs', 'performance.md'):
        rerun += ' --output %s' % shlex.quote(args.output)
    text = render(ours, theirs, rounds_ours, rounds_theirs, sizes, machine(), args, rerun,
                  ssh_section)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as fp:
        fp.write(text)
    log('wrote %s' % os.path.relpath(path, ROOT))
    print(json.dumps({'mitogen_rs': ours, 'python_mitogen': theirs,
                      'sizes': dict(sizes)}))


if __name__ == '__main__':
    main()
