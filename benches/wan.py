#!/usr/bin/env python3
"""Connecting over a slow link: mitogen-rs, Python Mitogen and plain ssh.

Starts the throw-away sshd of compare.py --ssh (benches/throwaway_sshd.py; as
root) and reaches it through benches/delay_proxy.py as ssh's ProxyCommand,
which delays each direction by --delay-ms (default 50: a 100 ms round trip).
Every round runs each of these once, in an order that rotates from round to
round, so drift in the machine's state affects all alike:

    ssh          `ssh HOST true` (wall time of the process)
    run warm     `mitogen run HOST -- true`, the build cached on HOST
    run cold     the same after emptying HOST's cache (untimed, over a
                 direct ssh): includes the upload
    lib warm     `Router::connect_with` + the first (no-op) call, timed in a
                 master that has connected once before (examples/connect_call.rs)
    lib cold     the same, HOST's cache emptied before the sample
    python warm  Python Mitogen 0.3.54 `router.ssh()` + its first call, timed
                 in a master that has connected once before (the venv of
                 compare.py)

and prints (and with --write, puts into docs/performance.md between its
markers) the medians, each one's excess over `ssh true`, and the per-round
figures.

Usage: python3 benches/wan.py [--rounds 5] [--delay-ms 50] [--write]
       [--output docs/performance.md] [--no-python]
"""

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benches'))

import compare  # noqa: E402  (its helpers: run, output, log, target_dir, python_venv)
from throwaway_sshd import ThrowawaySshd, stop_on_sigterm  # noqa: E402

WAN_BEGIN, WAN_END = compare.WAN_BEGIN, compare.WAN_END

TIMEOUT = 120

# key, label
KEYS = [
    ('ssh', '`ssh HOST true`'),
    ('run_warm', '`mitogen run HOST -- true`, cached'),
    ('run_cold', '`mitogen run HOST -- true`, cold (upload)'),
    ('lib_warm', '`Router::connect_call` (connect + first call), cached'),
    ('lib_cold', '`Router::connect_call` (connect + first call), cold (upload)'),
    ('py_warm', 'Python Mitogen 0.3.54 `router.ssh()` + first call'),
    ('direct_warm', '`mitogen run HOST -- true`, cached, direct (no proxy)'),
    ('direct_cold', '`mitogen run HOST -- true`, cold, direct (no proxy)'),
]

PY_CONNECT = r'''
import json, sys, time
import mitogen.master, mitogen.utils
opts = json.loads(sys.argv[1])
broker = mitogen.master.Broker()
router = mitogen.master.Router(broker)
try:
    def once():
        t = time.monotonic()
        ctx = router.ssh(connect_timeout=60, **opts)
        ctx.call(int, 0)
        took = (time.monotonic() - t) * 1e3
        ctx.shutdown(wait=True)
        return took
    once()
    print(json.dumps({"connect_call_ms": [once()]}))
finally:
    broker.shutdown()
    broker.join()
'''


def build():
    compare.run(['cargo', 'build', '--release', '-p', 'mitogen-cli', '--bin', 'mitogen'])
    compare.run(['cargo', 'build', '--release', '-p', 'mitogen', '--example', 'connect_call'])
    release = os.path.join(compare.target_dir(), compare.STATIC_TARGET, 'release')
    if not os.path.exists(os.path.join(release, 'mitogen')):
        release = os.path.join(compare.target_dir(), 'release')
    return os.path.join(release, 'mitogen'), os.path.join(release, 'examples', 'connect_call')


def timed(cmd):
    t = time.monotonic()
    subprocess.run(cmd, check=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    return (time.monotonic() - t) * 1e3


def reported(cmd):
    out = subprocess.run(cmd, check=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])['connect_call_ms'][0]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--delay-ms', type=float, default=50.0)
    p.add_argument('--write', action='store_true', help='write the section into --output')
    p.add_argument('--output', default=os.path.join('docs', 'performance.md'))
    p.add_argument('--no-python', action='store_true', help='leave Python Mitogen out')
    p.add_argument('--no-build', action='store_true', help='use the binaries already built')
    p.add_argument('--note', default='', help='a remark on the run, shown with the rerun line')
    return p.parse_args()


def main():
    args = parse_args()
    if args.no_build:
        release = os.path.join(compare.target_dir(), compare.STATIC_TARGET, 'release')
        ours, example = os.path.join(release, 'mitogen'), os.path.join(release, 'examples',
                                                                        'connect_call')
    else:
        ours, example = build()
    py = None if args.no_python else compare.python_venv()
    stop_on_sigterm()
    # -S: no site packages to load, so the proxy starts in a few ms.
    proxy = 'ProxyCommand=%s -S %s --delay-ms %g %%h %%p' % (
        sys.executable, os.path.join(ROOT, 'benches', 'delay_proxy.py'), args.delay_ms)
    with ThrowawaySshd() as sshd:
        direct = ['ssh'] + sshd.ssh_args()
        slow_opts = sshd.ssh_options() + [proxy]
        slow = ['ssh', '-p', str(sshd.port), '-l', sshd.user]
        for o in slow_opts:
            slow += ['-o', o]
        slow.append('127.0.0.1')
        o_args = []
        for o in slow_opts:
            o_args += ['-o', o]
        clear = ' '.join(shlex.quote(a) for a in direct + [CLEAR_CACHE])

        def clear_cache():
            subprocess.run(['sh', '-c', clear], check=True, timeout=TIMEOUT)

        def run_cold():
            clear_cache()
            return timed([ours, 'run'] + o_args + [sshd.target(), '--', 'true'])

        def lib_cold():
            took = reported([example, '--samples', '1', '--clear', clear]
                            + o_args + [sshd.target()])
            # Emptying the cache took `mitogen`'s build with it: put it back
            # (untimed), so that the next cached `mitogen run` is cached.
            timed([ours, 'run'] + o_args + [sshd.target(), '--', 'true'])
            return took

        py_opts = dict(hostname='127.0.0.1', port=sshd.port, username=sshd.user,
                       identity_file=sshd.client_key, check_host_keys='ignore',
                       ssh_args=sum((['-o', o] for o in slow_opts), []), compression=False)
        steps = {
            'ssh': lambda: timed(slow + ['true']),
            'run_warm': lambda: timed([ours, 'run'] + o_args + [sshd.target(), '--', 'true']),
            'run_cold': run_cold,
            'lib_warm': lambda: reported([example, '--samples', '1'] + o_args + [sshd.target()]),
            'lib_cold': lib_cold,
        }
        if py:
            steps['py_warm'] = lambda: reported([py, '-c', PY_CONNECT, json.dumps(py_opts)])
        # The same upload over the direct link, in the same rounds: its cost
        # there (cold less cached) is the upload's own time, which the cold
        # target allows on top of one round trip.
        d_args = []
        for o in sshd.ssh_options():
            d_args += ['-o', o]

        def direct_cold():
            clear_cache()
            return timed([ours, 'run'] + d_args + [sshd.target(), '--', 'true'])

        steps['direct_warm'] = lambda: timed([ours, 'run'] + d_args + [sshd.target(), '--',
                                                                         'true'])
        steps['direct_cold'] = direct_cold
        # Fill the cache and warm everything once, untimed; the upload's size
        # from the master's log.
        clear_cache()
        log = subprocess.run([ours, '-vv', 'run'] + o_args + [sshd.target(), '--', 'true'],
                             check=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True).stderr
        sent = re.findall(r'uploaded=(\d+)', log)
        args.sent = max(int(n) for n in sent) if sent else None
        rounds = []
        order = list(steps)
        for i in range(args.rounds):
            compare.log('slow link round %d of %d' % (i + 1, args.rounds))
            got = {}
            for key in order[i % len(order):] + order[:i % len(order)]:
                got[key] = steps[key]()
            compare.log('  ' + json.dumps({k: round(v, 1) for k, v in got.items()}))
            rounds.append(got)
    size = os.path.getsize(ours)
    args.size_text = '%.1f MiB' % (size / 1048576.0)
    if args.sent:
        args.size_text += ', %.2f MiB as sent' % (args.sent / 1048576.0)
    text = render(rounds, args)
    print(text)
    if args.write:
        path = os.path.join(ROOT, args.output)
        # When new: where compare.py keeps it, before the comparison with an
        # earlier commit, else before the binary sizes.
        compare.write_section(path, WAN_BEGIN, WAN_END, text,
                              before=(compare.AGAINST_BEGIN, '## Release binary sizes'))
        compare.log('wrote %s' % os.path.relpath(path, ROOT))


# Empties every cache directory the first stage may use (as `mitogen bench`'s
# CLEAR_CACHE, crates/mitogen-cli/src/bench/ssh.rs).
CLEAR_CACHE = ('U=$(id -u); rm -rf "${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/mitogen" '
               '"${TMPDIR:-/tmp}/mitogen-$U" "/dev/shm/mitogen-$U"')


def render(rounds, args):
    keys = [(k, label) for k, label in KEYS if k in rounds[0]]
    med = {k: statistics.median(r[k] for r in rounds) for k, _ in keys}
    rtt = 2 * args.delay_ms
    # The targets, as excess over `ssh HOST true` (None: none given).
    targets = {'run_warm': 50.0, 'lib_warm': 50.0}
    # Cold: one round trip (the upload decision) and the upload's own time,
    # measured on the direct link in the same rounds (cold less cached).
    upload_ms = None
    if 'direct_cold' in med and 'direct_warm' in med:
        upload_ms = med['direct_cold'] - med['direct_warm']
        targets['run_cold'] = targets['lib_cold'] = rtt + upload_ms
    lines = [WAN_BEGIN, '## Slow links', '']
    lines.append(
        'Through `benches/delay_proxy.py` as ssh\'s `ProxyCommand`, which delays each '
        'direction by %g ms (a %g ms round trip; the kernel here has no netem), to the '
        'throw-away sshd of `compare.py --ssh`. Each round runs every row once, in an '
        'order that rotates; medians of %d rounds. "over ssh" is the median less '
        '`ssh HOST true`\'s, the same link\'s floor. `mitogen run` is timed as a process, '
        'like `ssh`; `Router::connect_call` (a connect and its first call, '
        '`examples/connect_call.rs`) and Python Mitogen (`router.ssh()` and a first '
        'call) inside a master that has connected once before. Cold rows empty the '
        'remote cache first (untimed), so they include the upload of the program (`mitogen`: %s), sent '
        'gzip-compressed (made once per build and kept on the master: `core/packed.rs`), '
        'over ssh\'s flow-controlled channel. The "direct" rows are the same `mitogen run` '
        'over the direct link (no proxy), cached and cold: their difference is the '
        'upload\'s own time, which the cold target allows on top of one round trip '
        '(for `connect_call`, whose own build is smaller, an allowance on the large side).'
        % (args.delay_ms, rtt, len(rounds), args.size_text))
    lines.append('')
    lines.append('| | median | over ssh | in round trips | target | met |')
    lines.append('|---|---:|---:|---:|---|:---:|')
    for k, label in keys:
        if k.startswith('direct_'):
            continue
        over = med[k] - med['ssh']
        target = targets.get(k)
        lines.append('| %s | %.0f ms | %s | %s | %s | %s |' % (
            label, med[k], '' if k == 'ssh' else '%+.0f ms' % over,
            '' if k == 'ssh' else '%+.2f' % (over / rtt),
            '' if target is None else '≤ ssh + %.0f ms%s' % (
                target, ' (1 round trip + the upload\'s %.0f ms)' % upload_ms
                if k.endswith('_cold') else ''),
            '' if target is None else ('yes' if over <= target else '**no**')))
    if upload_ms is not None:
        lines.append('| %s | %.0f ms | | | | |' % (dict(keys)['direct_warm'], med['direct_warm']))
        lines.append('| %s | %.0f ms | | | | |' % (dict(keys)['direct_cold'], med['direct_cold']))
    lines.append('')
    lines.append('Where the round trips went (a connection traced through the proxy, '
                 '`DELAY_PROXY_LOG=FILE`): a cached `mitogen run` sends the configuration '
                 'and the command behind the first stage (ssh passes them on as soon as the '
                 'remote command has started), so its result comes back where `ssh true`\'s '
                 'exit status does, and it exits without waiting for the remote side to '
                 'acknowledge its end. A cold one adds the round trip of the upload decision '
                 '(`MITOGEN-STAGE need`, then the build) and the transfer; the build starts '
                 'with the configuration and the command handed over by the stage. '
                 'docs/protocol.md, "No round trip of its own".')
    lines.append('')
    lines.append('The round trips, read off `DELAY_PROXY_LOG` traces of single connections:')
    lines.append('')
    lines.append('| | after ssh\'s exec request is answered | to the result | after the result |')
    lines.append('|---|---|---|---|')
    lines.append('| `ssh HOST true` | the exit status comes back | 1 round trip + the remote '
                 'command | ssh exits |')
    lines.append('| `mitogen run`, cached, before the prelude | status and greeting come back, '
                 'then configuration and command go out, then the result comes back | 2 round '
                 'trips + the stage | `SHUTDOWN` sent and the exit awaited: +1 round trip |')
    lines.append('| `mitogen run`, cached | the prelude is on its way already (ssh forwards '
                 'stdin once the exec is confirmed); status, greeting and result come back '
                 'together | 1 round trip + the stage, and at most half a round trip more '
                 'for a remote that starts in less than one (the prelude arrives a round '
                 'trip after the exec request) | exits at once; ssh ends by itself |')
    lines.append('| `mitogen run`, cold | `need` comes back (the stage asks before it '
                 'looks for a directory), the build goes out (gzipped, under ssh\'s 2 MiB '
                 'channel window, so in one burst), greeting and result come back together '
                 '| 2 round trips + the stage + the transfer | exits at once |')
    if args.note:
        lines.append('')
        lines.append('Run conditions: %s. On a shared machine one round\'s figures can '
                     'spread by more than the 50 ms the targets resolve; the round-trip '
                     'counts above are what load cannot blur.' % args.note)
    lines.append('')
    lines.append('Every round (ms):')
    lines.append('')
    lines.append('| round | ' + ' | '.join(k for k, _ in keys) + ' |')
    lines.append('|---|' + '---:|' * len(keys))
    for i, r in enumerate(rounds):
        lines.append('| %d | ' % (i + 1) + ' | '.join('%.0f' % r[k] for k, _ in keys) + ' |')
    lines.append('')
    lines.append('Rerun: `python3 benches/wan.py --rounds %d --write`.' % len(rounds))
    lines.append(WAN_END)
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    main()
