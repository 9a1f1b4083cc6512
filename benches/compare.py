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

With --sudo (as root) it creates a throw-away user and a sudoers drop-in that
lets root sudo to it without a password (both removed at exit), and compares
`mitogen bench --target sudo:USER` with Python Mitogen's `router.sudo()`, next
to `sudo -n -u USER true` timed in the same runs: a third table.

With --chains it compares a context three `local` hops away with a direct one
(`mitogen bench --target local/local/local` and `--target local`; Python's
`--via 2` and no via), all four interleaved in each round: a fourth table.
Sections not rerun are kept from the output file, as for --ssh.

With --chain-ssh (as root) it starts the throw-away sshd of --ssh and the
throw-away sudo user of --sudo and compares chains through them: ssh → sudo
(`mitogen bench --target root@127.0.0.1:PORT/sudo:USER`) and ssh → ssh → sudo
(`.../root@127.0.0.1:PORT/root@127.0.0.1:PORT/sudo:USER`, the second ssh made
from the first hop to the same sshd), against Python Mitogen's
`router.ssh(via=...)` / `router.sudo(via=...)` chains (`bench_mitogen.py --ssh
... [--ssh-hops 2] --sudo USER`), all four interleaved in each round, next to
the sum of the hops' floors (`ssh HOST true`, `sudo -n -u USER true`) timed in
the same runs: a fifth table.

Usage: python3 benches/compare.py [--ssh] [--sudo] [--chains] [--chain-ssh] [--rounds 3]
       [--mib 256] [--quick] [--output PATH]
"""

import argparse
import atexit
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
# A hand-written block inside the ssh section (the cold connect traced),
# carried over by each run that rewrites the section.
SSH_NOTES_BEGIN = '<!-- ssh notes: kept by benches/compare.py -->'
SSH_NOTES_END = '<!-- end of ssh notes -->'

# The targets over ssh, relative to the floors measured in the same run.
SSH_WARM_OVER_FLOOR_MS = 15.0
SSH_COLD_OVER_FLOOR_MS = 60.0
SSH_RTT_US = 60.0
SSH_CAT_FRACTION = 0.90
SSH_RSS_KIB = 4 * 1024.0

# The sudo and chains sections, kept the same way.
SUDO_BEGIN = '<!-- sudo section: written by benches/compare.py --sudo -->'
SUDO_END = '<!-- end of sudo section -->'
CHAINS_BEGIN = '<!-- chains section: written by benches/compare.py --chains -->'
CHAINS_END = '<!-- end of chains section -->'

# The sudo issue's target: connect <= 1.5 x the `sudo true` floor + 5 ms.
SUDO_FLOOR_FACTOR = 1.5
SUDO_FLOOR_PLUS_MS = 5.0
# The throw-away user of --sudo, and its sudoers drop-in.
SUDO_USER = 'mitogen-bench'
SUDOERS_DROPIN = '/etc/sudoers.d/mitogen-bench'

# The multi-hop issue's targets: each extra hop adds at most this to the rtt,
# and throughput through 3 hops keeps at least this fraction of one hop's.
CHAIN_RTT_PER_HOP_US = 15.0
CHAIN_THROUGHPUT_FRACTION = 0.80
CHAIN_TARGET = 'local/local/local'
CHAIN_VIA = 2

# The ssh-chain section, and the multi-hop issue's connect target: a chain
# connects within this of the sum of its hops' floors measured in the same run.
# The section benches/against.py writes (this tree against an earlier
# commit), kept as it is by every run of this script.
AGAINST_BEGIN = '<!-- against section: written by benches/against.py -->'
# Kept as it is: benches/wan.py writes it.
WAN_BEGIN = '<!-- slow-link section: written by benches/wan.py -->'
WAN_END = '<!-- end of slow-link section -->'
AGAINST_END = '<!-- end of against section -->'
CONTAINERS_BEGIN = '<!-- containers section: written by benches/containers.py -->'
CONTAINERS_END = '<!-- end of containers section -->'
# The section benches/files.py writes (file transfer), kept likewise.
FILES_BEGIN = '<!-- files section: written by benches/files.py -->'
FILES_END = '<!-- end of files section -->'
REUSE_BEGIN = '<!-- reuse section: written by benches/reuse.py -->'
REUSE_END = '<!-- end of reuse section -->'
CHAIN_SSH_BEGIN = '<!-- ssh chain section: written by benches/compare.py --chain-ssh -->'
CHAIN_SSH_END = '<!-- end of ssh chain section -->'
CHAIN_SSH_OVER_FLOOR_MS = 30.0
# Chains through the throw-away sshd: (label, ssh hops); each ends with sudo.
SSH_CHAINS = [('ssh/sudo', 1), ('ssh/ssh/sudo', 2)]

# Keys of `mitogen bench --json` over ssh, in table order.
SSH_KEYS = ['connect_ms', 'connect_cold_ms', 'ssh_floor_ms', 'rtt_us',
            'pipelined_calls_per_s', 'throughput_mib_s', 'cat_mib_s', 'pull_mib_s',
            'child_rss_kib']


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log('+ ' + ' '.join(shlex.quote(c) for c in cmd))
    kw.setdefault('cwd', ROOT)
    return subprocess.run(cmd, check=True, timeout=RUN_TIMEOUT, **kw)


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
    if key in ('connect_ms', 'connect_cold_ms', 'ssh_floor_ms', 'floor_ms'):
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
    # round() then + 0.0 turns a tiny negative into +0.0, not -0.0.
    return '%+.1f ms' % (round(value, 1) + 0.0)


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


def existing_section(path, begin_marker, end_marker):
    """A section of an earlier run, kept when this run does not redo it."""
    try:
        with open(path) as fp:
            text = fp.read()
    except OSError:
        return None
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < begin:
        return None
    return text[begin:end + len(end_marker)]


def write_section(path, begin_marker, end_marker, text, before=()):
    """Writes `text` (a section from `begin_marker` to `end_marker`) into the
    file at `path`: in place of the earlier run's section, else just before
    the first of the `before` marks found, else at the end. The rest of the
    file is kept as it is."""
    try:
        with open(path) as fp:
            doc = fp.read()
    except FileNotFoundError:
        doc = ''
    begin, end = doc.find(begin_marker), doc.find(end_marker)
    if begin >= 0 and end > begin:
        doc = doc[:begin] + text + doc[end + len(end_marker):]
    else:
        for mark in before:
            at = doc.find(mark)
            if at >= 0:
                doc = doc[:at] + text + '\n\n' + doc[at:]
                break
        else:
            doc = doc.rstrip('\n') + '\n\n' + text + '\n'
    with open(path, 'w') as fp:
        fp.write(doc)


def existing_ssh_section(path):
    """The ssh section of an earlier run, kept when this run has none."""
    return existing_section(path, SSH_BEGIN, SSH_END)


def with_ssh_notes(section, path):
    """A new ssh section, keeping the hand-written notes of the one it
    replaces (placed just before the section's end)."""
    notes = existing_section(path, SSH_NOTES_BEGIN, SSH_NOTES_END)
    if not notes:
        return section
    return section.replace(SSH_END, notes + '\n' + SSH_END)


SUDO_KEYS = ['connect_ms', 'floor_ms', 'rtt_us', 'pipelined_calls_per_s',
             'throughput_mib_s', 'child_rss_kib']


def sudo_limit(r):
    """The issue's bound on a run's connect, from that run's floor."""
    return SUDO_FLOOR_FACTOR * r['floor_ms'] + SUDO_FLOOR_PLUS_MS


def render_sudo(rounds_ours, rounds_theirs, args, sudo_version):
    """The sudo section: ours and Python's sudo contexts next to `sudo true`."""
    ours = {k: median([r[k] for r in rounds_ours]) for k in SUDO_KEYS}
    theirs = {k: median([r[k] for r in rounds_theirs]) for k in SUDO_KEYS}
    # Within each run, then the median over rounds (as over ssh).
    over = median([r['connect_ms'] - r['floor_ms'] for r in rounds_ours])
    py_over = median([r['connect_ms'] - r['floor_ms'] for r in rounds_theirs])
    margin = median([r['connect_ms'] - sudo_limit(r) for r in rounds_ours])
    limit = median([sudo_limit(r) for r in rounds_ours])
    ratio_f = median([r['connect_ms'] / r['floor_ms'] for r in rounds_ours])
    py_ratio_f = median([r['connect_ms'] / r['floor_ms'] for r in rounds_theirs])

    out = []
    w = out.append
    w(SUDO_BEGIN)
    w('## Switching user with sudo')
    w('')
    w('Both sides start a context as a throw-away user `%s` with sudo (%s), from root, '
      'through a sudoers drop-in `root ALL=(%s) NOPASSWD: ALL` made for the run and '
      'removed after it: mitogen-rs with `mitogen bench --target sudo:%s --json`, Python '
      'Mitogen with `router.sudo(username=...)` (`bench_mitogen.py --sudo`, the child on '
      '`/usr/bin/python3`). `connect_ms` is a warm connect: the program is already in the '
      'user\'s cache (mitogen-rs) and the master has served it before (both). Each run '
      'also times `sudo -n -u USER true`, one sample before each timed connect: the '
      'floor, what sudo itself costs. Every figure is the median over %d interleaved '
      'round(s); "vs floor" is taken within each run, then the median.'
      % (SUDO_USER, sudo_version, SUDO_USER, SUDO_USER, args.rounds))
    w('')
    w('| key | what | mitogen-rs | Python Mitogen %s | ratio | floor `sudo true`, same runs '
      '(mitogen-rs / Python) | mitogen-rs vs floor | Python vs floor | target | target met |'
      % PYTHON_MITOGEN_VERSION)
    w('|---|---|---:|---:|---:|---:|---:|---:|---|:---:|')
    floor = '%s / %s ms' % (fmt('floor_ms', ours['floor_ms']),
                            fmt('floor_ms', theirs['floor_ms']))
    w('| `connect_ms` | warm sudo connect: new context + its first call (ms) | %s | %s | %s '
      '| %s | %s (%.1f× floor) | %s (%.1f× floor) | ≤ %.1f × floor + %.0f ms (%.2f ms) | %s |' % (
          fmt('connect_ms', ours['connect_ms']), fmt('connect_ms', theirs['connect_ms']),
          ratio_text(ours['connect_ms'], theirs['connect_ms'], True), floor,
          signed_ms(over), ratio_f, signed_ms(py_over), py_ratio_f,
          SUDO_FLOOR_FACTOR, SUDO_FLOOR_PLUS_MS, limit,
          'yes' if margin <= 0 else '**no**'))
    for key, what, lower in [
            ('rtt_us', 'round trip of one no-op call (µs)', True),
            ('pipelined_calls_per_s', 'pipelined no-op calls (calls/s)', False),
            ('throughput_mib_s', 'streaming child → master, 1 MiB chunks (MiB/s)', False),
            ('child_rss_kib', 'child VmRSS after the calls (KiB)', True)]:
        w('| `%s` | %s | %s | %s | %s | – | – | – | – | – |' % (
            key, what, fmt(key, ours[key]), fmt(key, theirs[key]),
            ratio_text(ours[key], theirs[key], lower)))
    w('')
    w('### Every round with sudo')
    w('')
    w('| round | side | ' + ' | '.join('`%s`' % k for k in SUDO_KEYS) + ' |')
    w('|---|---|' + '---:|' * len(SUDO_KEYS))
    for i, (o, t) in enumerate(zip(rounds_ours, rounds_theirs), 1):
        w('| %d | mitogen-rs | ' % i + ' | '.join(fmt(k, o.get(k)) for k in SUDO_KEYS) + ' |')
        w('| %d | Python | ' % i + ' | '.join(fmt(k, t.get(k)) for k in SUDO_KEYS) + ' |')
    w('')
    w('Rerun: `python3 benches/compare.py --sudo` (as root). The Rust side alone: '
      '`mitogen bench --target sudo:USER --json` or `--target local/sudo:USER` (the '
      '`floor_ms` key needs a NOPASSWD sudo rule for the caller: it runs `sudo -n`).')
    w(SUDO_END)
    return '\n'.join(out)


def sudo_rounds(ours_bin, py, common, args):
    """Both benchmarks through sudo to a throw-away user; returns the section."""
    sys.path.insert(0, os.path.join(ROOT, 'benches'))
    from throwaway_sshd import stop_on_sigterm

    # SIGTERM becomes SystemExit, so the clean-up below runs then too.
    stop_on_sigterm()
    version = subprocess.run(['sudo', '-V'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=30).stdout.splitlines()[0].strip()
    with ThrowawaySudoUser() as user:
        ours_cmd = [ours_bin, 'bench', '--json', '--target', 'sudo:%s' % user] + common
        theirs_cmd = [py, os.path.join(ROOT, 'benches', 'python', 'bench_mitogen.py'),
                      '--sudo', user] + common
        rounds_ours, rounds_theirs = interleaved(ours_cmd, theirs_cmd, args.rounds, 'sudo')
        return render_sudo(rounds_ours, rounds_theirs, args, version)


class ThrowawaySudoUser(object):
    """A user and a sudoers drop-in letting root sudo to it without a
    password; both are removed on exit (also when an exception or SIGTERM
    ends the run: atexit covers what `with` would miss)."""

    def __enter__(self):
        self.created = False
        if subprocess.run(['id', '-u', SUDO_USER], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode != 0:
            run(['useradd', '-m', '-s', '/bin/sh', SUDO_USER])
            self.created = True
        atexit.register(self.cleanup)
        tmp = SUDOERS_DROPIN + '.tmp'
        with open(tmp, 'w') as fp:
            fp.write('root ALL=(%s) NOPASSWD: ALL\n' % SUDO_USER)
        os.chmod(tmp, 0o440)
        run(['visudo', '-cqf', tmp])
        os.rename(tmp, SUDOERS_DROPIN)
        return SUDO_USER

    def cleanup(self):
        for path in (SUDOERS_DROPIN, SUDOERS_DROPIN + '.tmp'):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self.created:
            subprocess.run(['userdel', '-r', '-f', SUDO_USER], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self.created = False

    def __exit__(self, *exc):
        self.cleanup()
        return False


# What the chains table needs said every time it is written.
CHAINS_NOTE = (
    'A frame of 256 KiB or more from a local hop passes each relay by `splice(2)` as '
    'it arrives, without being copied into it (`docs/protocol.md`, *Cut-through '
    'relaying*); Python Mitogen\'s relays receive each message whole and send it on. '
    'With three hops, four busy processes share the two CPUs, and where the scheduler '
    'puts them moves the figures from round to round (see every round below): streams '
    'of 1 GiB per run (`--mib 1024`) and many rounds give steadier medians than the '
    'default 256 MiB. On the round trip, a relay\'s broker thread carries requests down '
    'and replies up, and a waiting thread polls only while its recent waits ended within '
    'the polling window (`docs/protocol.md`, *Which thread carries a message*).')


def render_chain_cpu(rounds):
    """What each process on the path spends per GiB (`mitogen bench --cpu`),
    free-running and with every process kept on its CPUs
    (benches/placement.py), and the ceiling of the 3-hop / 1-hop ratio that
    follows on this machine."""
    k = 'throughput_mib_s'
    cpus = len(os.sched_getaffinity(0))
    rows = [('free-running (the rounds above)', rounds['ours'])]
    if rounds.get('pinned'):
        rows.append(('each process kept on its CPUs', rounds['pinned']))
    out = []
    w = out.append
    w('Where the CPU goes, mitogen-rs only (`mitogen bench --cpu`: CPU ms per GiB '
      'streamed, user + system, all threads, of each process on the path: master / '
      'relays from the master down / the measured context; medians over rounds). The '
      'pinned runs are the same two runs again in every round with each process kept '
      'on CPUs of its own (`benches/placement.py`: master on CPU 0, hops by depth, the '
      'path cut into %d contiguous group(s), one per CPU).' % cpus)
    w('')
    w('| runs | 1 hop | 3 hops | 3 hops / 1 hop | CPU per GiB, 1 hop | CPU per GiB, 3 hops |')
    w('|---|---:|---:|---:|---:|---:|')
    for label, side in rows:
        w('| %s | %s | %s | %.0f %% | %s | %s |' % (
            label, fmt(k, median([r['one'][k] for r in side])),
            fmt(k, median([r['three'][k] for r in side])),
            100 * median([r['three'][k] / r['one'][k] for r in side]),
            ' / '.join('%.0f' % v for v in cpu_of(side, 'one')),
            ' / '.join('%.0f' % v for v in cpu_of(side, 'three'))))
    w('')
    c1, c3 = cpu_of(rows[-1][1], 'one'), cpu_of(rows[-1][1], 'three')
    if len(c1) != 2 or len(c3) != 4:
        return out
    g1, g3 = stream_ceiling(c1, cpus), stream_ceiling(c3, cpus)
    w('A path streams no faster than its busiest process can on one CPU, nor faster '
      'than the %d CPU(s) shared by all its processes allow (their CPU per GiB summed). '
      'At the %s costs that is %.1f GiB/s through 1 hop and %.1f GiB/s through 3: while '
      'relays carry the bytes, 3 hops can keep at most **%.0f %%** of 1 hop on this '
      'machine. The relays cost %.0f %% and %.0f %% of what the master does per GiB: '
      'splice moves page references, but the kernel still handles every page, and the '
      'relay nearest the end also copies the small linear part of each socket buffer '
      'the sender wrote. With a CPU for every process (4 or more here) the ceiling is '
      '%.0f %%.'
      % (cpus, 'pinned' if len(rows) > 1 else 'median', 1000 * g1, 1000 * g3,
         100 * g3 / g1, 100 * c3[1] / c3[0], 100 * c3[2] / c3[0],
         100 * min(1.0, max(c1) / max(c3))))
    w('')
    if len(rows) > 1:
        w('Free-running, the scheduler often puts a reader on its writer\'s CPU (a socket '
          'write wakes its reader as a "sync" wake-up, which hands it the writer\'s CPU), '
          'and the two ends of a single hop then take turns on one CPU while the other '
          'idles: 1 hop loses up to half its speed in some rounds, and every process '
          'spends more per GiB when it waits more. That is what lets the free-running '
          'ratio come near or above the ceiling.')
        w('')
    return out


def cpu_of(side_rounds, hops):
    """Median `cpu_ms_per_gib` per process (this one first) over rounds."""
    lists = [r[hops].get('cpu_ms_per_gib') for r in side_rounds]
    lists = [l for l in lists if l]
    return [median(col) for col in zip(*lists)] if lists else []


def stream_ceiling(costs, cpus):
    """GiB per ms a path whose processes need `costs` ms per GiB can stream:
    no faster than its busiest process on one CPU, nor than the CPUs shared
    by all of them allow."""
    return min(cpus / sum(costs), 1 / max(costs))


def throughput_verdict(keep, pinned):
    """Whether 3 hops kept the target share of 1 hop: free-running, and, when
    there are pinned runs, with every process on its CPUs as well (the
    free-running ratio is only near the target when 1 hop is slowed down)."""
    def verdict(v):
        return 'yes' if v >= CHAIN_THROUGHPUT_FRACTION else '**no**'
    if not pinned:
        return verdict(keep)
    k = 'throughput_mib_s'
    kept_pinned = median([r['three'][k] / r['one'][k] for r in pinned])
    return '%s free-running; %s pinned (%.0f %%, see below)' % (
        verdict(keep), verdict(kept_pinned), 100 * kept_pinned)


def render_chains(rounds, args):
    """The chains section: three local hops against one, both sides."""
    def med(side, f):
        return median([f(r) for r in rounds[side]])

    def per_hop(side):
        # (rtt through 3 hops - rtt direct) / 2 extra hops, per round.
        return med(side, lambda r: (r['three']['rtt_us'] - r['one']['rtt_us']) / 2)

    def kept(side):
        return med(side, lambda r: r['three']['throughput_mib_s'] / r['one']['throughput_mib_s'])

    def fig(side, hops, key):
        return median([r[hops][key] for r in rounds[side]])

    out = []
    w = out.append
    w(CHAINS_BEGIN)
    w('## Through a chain of hops')
    w('')
    w('A context three `local` hops away against a direct child, on one machine: '
      'mitogen-rs with `mitogen bench --target %s` and `--target local`, Python Mitogen '
      'with `bench_mitogen.py --via %d` (two intermediate `router.local()` contexts, '
      '`via=`) and without. All four run in each of %d round(s), ours and Python\'s '
      'alternately; "per extra hop" and "3 hops / 1 hop" are taken within each round, '
      'then the median. The targets are those of the multi-hop issue.'
      % (CHAIN_TARGET, CHAIN_VIA, args.rounds))
    w('')
    w('| key | mitogen-rs, 1 hop | mitogen-rs, 3 hops | mitogen-rs per extra hop / kept '
      '| Python, 1 hop | Python, 3 hops | Python per extra hop / kept | ratio, 3 hops '
      '| target | target met |')
    w('|---|---:|---:|---:|---:|---:|---:|---:|---|:---:|')
    rtt_hop, py_rtt_hop = per_hop('ours'), per_hop('theirs')
    keep, py_keep = kept('ours'), kept('theirs')
    w('| `rtt_us` (µs) | %s | %s | %+.1f µs | %s | %s | %+.1f µs | %s | ≤ %.0f µs per extra hop | %s |' % (
        fmt('rtt_us', fig('ours', 'one', 'rtt_us')), fmt('rtt_us', fig('ours', 'three', 'rtt_us')),
        rtt_hop,
        fmt('rtt_us', fig('theirs', 'one', 'rtt_us')),
        fmt('rtt_us', fig('theirs', 'three', 'rtt_us')), py_rtt_hop,
        ratio_text(fig('ours', 'three', 'rtt_us'), fig('theirs', 'three', 'rtt_us'), True),
        CHAIN_RTT_PER_HOP_US, 'yes' if rtt_hop <= CHAIN_RTT_PER_HOP_US else '**no**'))
    k = 'throughput_mib_s'
    w('| `%s` (MiB/s) | %s | %s | %.0f %% | %s | %s | %.0f %% | %s | 3 hops ≥ %.0f %% of 1 hop | %s |' % (
        k, fmt(k, fig('ours', 'one', k)), fmt(k, fig('ours', 'three', k)), 100 * keep,
        fmt(k, fig('theirs', 'one', k)), fmt(k, fig('theirs', 'three', k)), 100 * py_keep,
        ratio_text(fig('ours', 'three', k), fig('theirs', 'three', k), False),
        100 * CHAIN_THROUGHPUT_FRACTION,
        throughput_verdict(keep, rounds.get('pinned'))))
    for key, lower in [('connect_ms', True), ('pipelined_calls_per_s', False)]:
        w('| `%s` | %s | %s | – | %s | %s | – | %s | – | – |' % (
            key, fmt(key, fig('ours', 'one', key)), fmt(key, fig('ours', 'three', key)),
            fmt(key, fig('theirs', 'one', key)), fmt(key, fig('theirs', 'three', key)),
            ratio_text(fig('ours', 'three', key), fig('theirs', 'three', key), lower)))
    w('')
    w('`connect_ms` through 3 hops is the whole chain started afresh for each sample '
      '(mitogen-rs: all three hops; Python: the measured context only, its `via` '
      'contexts stay up), so only the rtt and throughput rows are like for like.')
    w('')
    w(CHAINS_NOTE)
    w('')
    out.extend(render_chain_cpu(rounds))
    w('### Every round through chains')
    w('')
    keys = ['connect_ms', 'rtt_us', 'pipelined_calls_per_s', 'throughput_mib_s']
    w('| round | side | hops | ' + ' | '.join('`%s`' % k for k in keys) + ' |')
    w('|---|---|---:|' + '---:|' * len(keys))
    sides = [('ours', 'mitogen-rs'), ('theirs', 'Python')]
    if rounds.get('pinned'):
        sides.append(('pinned', 'mitogen-rs, pinned'))
    for i in range(len(rounds['ours'])):
        for side, label in sides:
            for hops, n in (('one', 1), ('three', 3)):
                r = rounds[side][i][hops]
                w('| %d | %s | %d | ' % (i + 1, label, n)
                  + ' | '.join(fmt(k, r[k]) for k in keys) + ' |')
    w('')
    w('Rerun: `python3 benches/compare.py --chains --rounds %d --mib %d`. The Rust side '
      'alone: `mitogen bench --target %s --json --mib %d`.'
      % (args.rounds, args.mib, CHAIN_TARGET, args.mib))
    w(CHAINS_END)
    return '\n'.join(out)


def chain_rounds(ours_bin, py, common, args):
    """One and three hops, both sides, interleaved; returns the section."""
    bench_py = os.path.join(ROOT, 'benches', 'python', 'bench_mitogen.py')
    cmds = {
        ('ours', 'one'): [ours_bin, 'bench', '--json', '--cpu', '--target', 'local'] + common,
        ('ours', 'three'): [ours_bin, 'bench', '--json', '--cpu', '--target', CHAIN_TARGET]
        + common,
        ('theirs', 'one'): [py, bench_py] + common,
        ('theirs', 'three'): [py, bench_py, '--via', str(CHAIN_VIA)] + common,
    }
    sys.path.insert(0, os.path.join(ROOT, 'benches'))
    from placement import pinned_bench_json

    cmds[('pinned', 'one')] = cmds[('ours', 'one')]
    cmds[('pinned', 'three')] = cmds[('ours', 'three')]
    order = [('ours', 'one'), ('theirs', 'one'), ('ours', 'three'), ('theirs', 'three'),
             ('pinned', 'one'), ('pinned', 'three')]
    rounds = {'ours': [], 'theirs': [], 'pinned': []}
    for i in range(args.rounds):
        log('chains round %d of %d' % (i + 1, args.rounds))
        got = {}
        # Reversed every other round, so no run always follows the same one.
        for key in (order if i % 2 == 0 else list(reversed(order))):
            if key[0] == 'pinned':
                got[key] = pinned_bench_json(cmds[key], 1 if key[1] == 'one' else 3)
            else:
                got[key] = bench_json(cmds[key])
            log('  %s %s: %s' % (key[0], key[1], json.dumps(got[key])))
        for side in ('ours', 'theirs', 'pinned'):
            rounds[side].append({'one': got[(side, 'one')], 'three': got[(side, 'three')]})
    return render_chains(rounds, args)


CHAIN_SSH_KEYS = ['connect_ms', 'floor_ms', 'rtt_us', 'pipelined_calls_per_s',
                  'throughput_mib_s', 'child_rss_kib']


def render_chain_ssh(rounds, args, ssh_version, sudo_version, user, sudo_user):
    """The ssh-chain section: whole chains against the sum of their floors."""
    def over(side, label):
        # Within each run, then the median over rounds.
        return median([r['connect_ms'] - r['floor_ms'] for r in rounds[side][label]])

    def fig(side, label, key):
        return median([r[key] for r in rounds[side][label]])

    out = []
    w = out.append
    w(CHAIN_SSH_BEGIN)
    w('## Through ssh and sudo hops')
    w('')
    w('Chains through the throw-away `sshd` of the ssh section (127.0.0.1, a random port, '
      'logging in as %s; %s) and the throw-away user `%s` of the sudo section (%s): '
      '`ssh/sudo` is ssh to the sshd, then sudo to the user from there; `ssh/ssh/sudo` '
      'is ssh to the sshd, ssh from that first hop to the same sshd again, then sudo. '
      'mitogen-rs with `mitogen bench --target %s@127.0.0.1:PORT/sudo:%s` and '
      '`--target %s@127.0.0.1:PORT/%s@127.0.0.1:PORT/sudo:%s`, Python Mitogen with '
      '`router.ssh()`, `router.ssh(via=...)` and `router.sudo(username=..., via=...)` '
      '(`bench_mitogen.py --ssh ... [--ssh-hops 2] --sudo %s`, every hop on '
      '`/usr/bin/python3`). `connect_ms` starts the whole chain afresh for each sample '
      'and gets its first call\'s result; it is warm: a first chain, untimed, filled '
      'every hop\'s cache (mitogen-rs) and primed the master (both), and every sample\'s '
      'chain is shut down after it.'
      % (user, ssh_version, sudo_user, sudo_version, user, sudo_user, user, user,
         sudo_user, sudo_user))
    w('')
    w('The floor is the sum of every hop\'s own tool, timed in the same run, one sample '
      'of each before each timed connect: `ssh HOST true` per ssh hop (with the options '
      'that side gives ssh) and `sudo -n -u %s true`. Each floor runs on this machine, '
      'as root: every hop here is on this machine (loopback ssh, logging in as root, '
      'and sudo from root), so these are the hops\' own costs. Every figure is the '
      'median over %d round(s), all four benchmarks interleaved in each (the order '
      'reversed every other round); "− floor" is taken within each run, then the '
      'median. The target is that of the multi-hop issue.' % (sudo_user, args.rounds))
    w('')
    w('| chain | mitogen-rs `connect_ms` | Python Mitogen %s `connect_ms` | ratio '
      '| floor sum, same runs (mitogen-rs / Python) | mitogen-rs − floor '
      '| Python − floor | target | target met |' % PYTHON_MITOGEN_VERSION)
    w('|---|---:|---:|---:|---:|---:|---:|---|:---:|')
    for label, _ in SSH_CHAINS:
        o = fig('ours', label, 'connect_ms')
        t = fig('theirs', label, 'connect_ms')
        mine = over('ours', label)
        w('| `%s` | %s | %s | %s | %s / %s ms | %s | %s | ≤ floor + %.0f ms | %s |' % (
            label, fmt('connect_ms', o), fmt('connect_ms', t), ratio_text(o, t, True),
            fmt('floor_ms', fig('ours', label, 'floor_ms')),
            fmt('floor_ms', fig('theirs', label, 'floor_ms')),
            signed_ms(mine), signed_ms(over('theirs', label)),
            CHAIN_SSH_OVER_FLOOR_MS,
            'yes' if mine <= CHAIN_SSH_OVER_FLOOR_MS else '**no**'))
    w('')
    w('The other figures, against the end of each chain (no targets of their own here):')
    w('')
    w('| chain | key | mitogen-rs | Python Mitogen | ratio |')
    w('|---|---|---:|---:|---:|')
    for label, _ in SSH_CHAINS:
        for key, lower in [('rtt_us', True), ('pipelined_calls_per_s', False),
                           ('throughput_mib_s', False), ('child_rss_kib', True)]:
            o, t = fig('ours', label, key), fig('theirs', label, key)
            w('| `%s` | `%s` | %s | %s | %s |' % (
                label, key, fmt(key, o), fmt(key, t), ratio_text(o, t, lower)))
    w('')
    w('### Every round through ssh and sudo hops')
    w('')
    w('| round | side | chain | ' + ' | '.join('`%s`' % k for k in CHAIN_SSH_KEYS) + ' |')
    w('|---|---|---|' + '---:|' * len(CHAIN_SSH_KEYS))
    for i in range(args.rounds):
        for side, name in (('ours', 'mitogen-rs'), ('theirs', 'Python')):
            for label, _ in SSH_CHAINS:
                r = rounds[side][label][i]
                w('| %d | %s | `%s` | ' % (i + 1, name, label)
                  + ' | '.join(fmt(k, r.get(k)) for k in CHAIN_SSH_KEYS) + ' |')
    w('')
    w('Rerun: `python3 benches/compare.py --chain-ssh` (as root). The Rust side alone, '
      'against any chain of ssh and sudo hops: `mitogen bench --target HOST/sudo:USER '
      '[-o OPTION]... --json` (its `floor_ms` runs every hop\'s floor on this machine, '
      'which is each hop\'s own cost only when every host is this machine; the sudo '
      'floor needs a NOPASSWD rule for the caller).')
    w(CHAIN_SSH_END)
    return '\n'.join(out)


def chain_ssh_rounds(ours_bin, py, common, args):
    """Both sides through ssh (and ssh again) then sudo, to the throw-away
    sshd and user; returns the section."""
    sys.path.insert(0, os.path.join(ROOT, 'benches'))
    from throwaway_sshd import ThrowawaySshd, stop_on_sigterm

    # SIGTERM becomes SystemExit, so the sshd and the user are cleaned up then too.
    stop_on_sigterm()
    ssh_version = subprocess.run(['ssh', '-V'], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True,
                                 timeout=30).stdout.strip()
    sudo_version = subprocess.run(['sudo', '-V'], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  timeout=30).stdout.splitlines()[0].strip()
    bench_py = os.path.join(ROOT, 'benches', 'python', 'bench_mitogen.py')
    with ThrowawaySshd() as sshd, ThrowawaySudoUser() as user:
        cmds = {}
        for label, hops in SSH_CHAINS:
            target = '/'.join([sshd.target()] * hops + ['sudo:%s' % user])
            ours = [ours_bin, 'bench', '--json', '--target', target] + common
            for opt in sshd.ssh_options():
                ours += ['-o', opt]
            cmds[('ours', label)] = ours
            cmds[('theirs', label)] = [
                py, bench_py, '--ssh', '127.0.0.1', '--ssh-port', str(sshd.port),
                '--ssh-user', sshd.user, '--identity', sshd.client_key,
                '--ssh-hops', str(hops), '--sudo', user] + common
        order = [(side, label) for label, _ in SSH_CHAINS for side in ('ours', 'theirs')]
        rounds = {side: {label: [] for label, _ in SSH_CHAINS} for side in ('ours', 'theirs')}
        for i in range(args.rounds):
            log('ssh chain round %d of %d' % (i + 1, args.rounds))
            # Reversed every other round, so no run always follows the same one.
            for key in (order if i % 2 == 0 else list(reversed(order))):
                got = bench_json(cmds[key])
                log('  %s %s: %s' % (key[0], key[1], json.dumps(got)))
                rounds[key[0]][key[1]].append(got)
        return render_chain_ssh(rounds, args, ssh_version, sudo_version, sshd.user, user)


def gzipped_size(path):
    """Bytes of the file at `path` gzip-compressed at zlib's best level."""
    import zlib
    with open(path, 'rb') as fp:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        return len(c.compress(fp.read()) + c.flush())


def render(ours, theirs, rounds_ours, rounds_theirs, sizes, info, args, rerun, ssh_section,
           more_sections=()):
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
    for section in (ssh_section,) + tuple(more_sections):
        if section:
            w(section)
            w('')
    w('## Release binary sizes')
    w('')
    w('Stripped, static release builds (the workspace\'s `[profile.release]`, built with '
      '`RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target '
      'x86_64-unknown-linux-gnu`); this is what a master ships to a remote host the first time, '
      'and it runs on any x86-64 Linux.')
    w('')
    w('A cold connect over ssh sends it gzip-compressed at the best level (`core/packed.rs`); '
      'the last column is zlib\'s best level here, which `miniz_oxide`\'s (what the master '
      'uses) is within 2 % of.')
    w('')
    w('| binary | bytes | MiB | gzipped (bytes) |')
    w('|---|---:|---:|---:|')
    for name, size, gz in sizes:
        w('| `%s` | {:,} | %.2f | {:,} |'.format(size, gz) % (name, size / 1048576.0))
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
    p.add_argument('--sudo', action='store_true',
                   help='also compare sudo contexts, with a throw-away user (needs root)')
    p.add_argument('--chains', action='store_true',
                   help='also compare a context 3 local hops away with a direct one')
    p.add_argument('--chain-ssh', action='store_true',
                   help='also compare ssh/sudo and ssh/ssh/sudo chains through a '
                        'throw-away sshd and user (needs root)')
    p.add_argument('--output', default=os.path.join('docs', 'performance.md'),
                   help='file to write, relative to the repository (default docs/performance.md)')
    args = p.parse_args()
    if args.rounds < 1 or args.mib < 1:
        p.error('--rounds and --mib must be >= 1')
    if args.ssh and os.geteuid() != 0:
        p.error('--ssh needs root: it starts its own sshd')
    if args.sudo and os.geteuid() != 0:
        p.error('--sudo needs root: it creates a user and a sudoers drop-in')
    if args.chain_ssh and os.geteuid() != 0:
        p.error('--chain-ssh needs root: it starts its own sshd and creates a user')
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
        ssh_section = with_ssh_notes(ssh_rounds(ours_bin, py, common, args), path)
    else:
        ssh_section = existing_ssh_section(path)
    if args.sudo:
        sudo_section = sudo_rounds(ours_bin, py, common, args)
    else:
        sudo_section = existing_section(path, SUDO_BEGIN, SUDO_END)
    if args.chains:
        chains_section = chain_rounds(ours_bin, py, common, args)
    else:
        chains_section = existing_section(path, CHAINS_BEGIN, CHAINS_END)
    if args.chain_ssh:
        chain_ssh_section = chain_ssh_rounds(ours_bin, py, common, args)
    else:
        chain_ssh_section = existing_section(path, CHAIN_SSH_BEGIN, CHAIN_SSH_END)
    against_section = existing_section(path, AGAINST_BEGIN, AGAINST_END)
    containers_section = existing_section(path, CONTAINERS_BEGIN, CONTAINERS_END)
    wan_section = existing_section(path, WAN_BEGIN, WAN_END)
    files_section = existing_section(path, FILES_BEGIN, FILES_END)
    reuse_section = existing_section(path, REUSE_BEGIN, REUSE_END)

    ours = {k: median([r[k] for r in rounds_ours]) for k, *_ in KEYS}
    theirs = {k: median([r[k] for r in rounds_theirs]) for k, *_ in KEYS}
    sizes = [
        ('mitogen', os.path.getsize(ours_bin), gzipped_size(ours_bin)),
        ('examples/quickstart', os.path.getsize(quickstart_bin), gzipped_size(quickstart_bin)),
    ]

    # Every mode whose section the file holds, whether run now or kept, so
    # that the command redoes the whole file.
    rerun = 'python3 benches/compare.py'
    for mode, section in (('ssh', ssh_section), ('sudo', sudo_section),
                          ('chains', chains_section), ('chain-ssh', chain_ssh_section)):
        if section:
            rerun += ' --' + mode
    if args.rounds != 3:
        rerun += ' --rounds %d' % args.rounds
    if args.mib != 256:
        rerun += ' --mib %d' % args.mib
    if args.quick:
        rerun += ' --quick'
    if os.path.normpath(args.output) != os.path.join('docs', 'performance.md'):
        rerun += ' --output %s' % shlex.quote(args.output)
    text = render(ours, theirs, rounds_ours, rounds_theirs, sizes, machine(), args, rerun,
                  ssh_section, (sudo_section, chains_section, chain_ssh_section,
                                wan_section, against_section, containers_section,
                                files_section, reuse_section))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as fp:
        fp.write(text)
    log('wrote %s' % os.path.relpath(path, ROOT))
    print(json.dumps({'mitogen_rs': ours, 'python_mitogen': theirs,
                      'sizes': {n: b for n, b, _ in sizes}}))


if __name__ == '__main__':
    main()
