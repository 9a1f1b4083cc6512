#!/usr/bin/env python3
"""Benchmark a docker hop: mitogen-rs against Python Mitogen on one container.

Needs root and a docker daemon. Makes (once, then reuses) a Debian image with
Python from `debootstrap --variant=minbase --include=python3 bookworm`
(deb.debian.org), imported as `mitogen-bench/debian-minbase:bookworm-python3`,
starts one container of it, and runs, interleaved for --rounds rounds (the
order alternating):

* `mitogen bench --json --target docker:C` (its `floor_ms` is `docker exec
  --interactive -- C true`, one sample before each timed connect): the
  stream on the direct socket, the default as root;
* the same with `docker:C,direct=off`: the stream on docker exec's pipe;
* benches/python/bench_docker.py: Python Mitogen's `router.docker()` on the
  same container, measured by bench_mitogen.py's own functions;
* `mitogen bench --json` (a local context: the reference of the rtt and
  throughput targets);
* the stream's own floors: one byte back and forth through `docker exec -i C
  cat` (round trip), and `docker exec C head -c N /dev/zero` read to the end
  (throughput, the streaming benchmark's direction).

Writes the medians into the "Containers" section of docs/performance.md
(between its markers; compare.py keeps the section). Reuses compare.py's
build (static release) and Python venv. Not run in CI.

Usage: python3 benches/containers.py [--rounds 3] [--mib 256] [--quick] [--output PATH]
"""

import argparse
import atexit
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the build, the venv, the output file's sections)

BEGIN, END = compare.CONTAINERS_BEGIN, compare.CONTAINERS_END
IMAGE = 'mitogen-bench/debian-minbase:bookworm-python3'
ROOTFS = '/var/tmp/mitogen-bench/debian-minbase'


def docker(*args, **kw):
    return subprocess.run(['docker'] + list(args), check=True, timeout=600,
                          stdout=subprocess.PIPE, text=True, **kw).stdout.strip()


def ensure_image():
    if subprocess.run(['docker', 'image', 'inspect', IMAGE], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        return
    if not os.path.exists(os.path.join(ROOTFS, 'usr/bin/python3')):
        subprocess.run(['rm', '-rf', ROOTFS], check=True)
        compare.run(['debootstrap', '--variant=minbase', '--include=python3', 'bookworm',
                     ROOTFS, 'http://deb.debian.org/debian'])
    tar = subprocess.Popen(['tar', '-C', ROOTFS, '-c', '.'], stdout=subprocess.PIPE)
    subprocess.run(['docker', 'import', '-', IMAGE], stdin=tar.stdout, check=True,
                   timeout=600, stdout=subprocess.DEVNULL)
    tar.wait()


def exec_rtt_us(container, n):
    """Median round trip of one byte through `docker exec -i C cat`."""
    p = subprocess.Popen(['docker', 'exec', '-i', '--', container, 'cat'],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    samples = []
    try:
        for i in range(n + 100):
            t0 = time.perf_counter()
            p.stdin.write(b'x')
            if p.stdout.read(1) != b'x':
                raise RuntimeError('cat in the container ended')
            if i >= 100:
                samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    return statistics.median(samples)


def exec_pull_mib_s(container, mib):
    """MiB/s `docker exec C head -c N /dev/zero` delivers to this process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(['docker', 'exec', '--', container, 'head', '-c',
                          str(mib * 1048576), '/dev/zero'], stdout=subprocess.PIPE)
    got = 0
    while True:
        chunk = p.stdout.read(1048576)
        if not chunk:
            break
        got += len(chunk)
    p.wait(timeout=60)
    if got != mib * 1048576:
        raise RuntimeError('received %d bytes' % got)
    return mib / (time.perf_counter() - t0)


def render(rounds, args, container_info):
    def med(side, key):
        return statistics.median(r[key] for r in rounds[side])

    ours, pipe, theirs, local = 'ours', 'pipe', 'theirs', 'local'
    floor = statistics.median([r['floor_ms'] for r in rounds[ours]])
    py_floor = statistics.median([r['floor_ms'] for r in rounds[theirs]])
    rtt_floor = statistics.median(rounds['exec_rtt_us'])
    pull_floor = statistics.median(rounds['exec_pull_mib_s'])
    lines = [BEGIN, '## Containers', '']
    w = lines.append
    w('A docker hop (`mitogen bench --target docker:C`) against Python Mitogen\'s '
      '`router.docker()` on the same running container (%s), and a local context '
      'measured in the same rounds, over %d interleaved round(s); every figure is a '
      'median (keys as in the tables above). `floor_ms` is `docker exec --interactive '
      '-- C true`, timed before each connect sample on both sides. Written by '
      '`benches/containers.py`.' % (container_info, args.rounds))
    w('')
    w('| key | mitogen-rs `docker:C` | Python `router.docker()` | ratio | '
      'mitogen-rs `docker:C,direct=off` | mitogen-rs `local` |')
    w('|---|---:|---:|---:|---:|---:|')
    for key, label, unit, lower, _ in compare.KEYS:
        w('| `%s` | %s | %s | %s | %s | %s |' % (
            key, compare.fmt(key, med(ours, key)), compare.fmt(key, med(theirs, key)),
            compare.ratio_text(med(ours, key), med(theirs, key), lower),
            compare.fmt(key, med(pipe, key)), compare.fmt(key, med(local, key))))
    w('| `floor_ms` | %s | %s | | %s | |' % (
        compare.fmt('floor_ms', floor), compare.fmt('floor_ms', py_floor),
        compare.fmt('floor_ms', statistics.median([r['floor_ms'] for r in rounds[pipe]]))))
    w('')
    connect = med(ours, 'connect_ms')
    # Over the floor within each run, then the median: the floor drifts with
    # the machine's load from run to run, and each run's pair shares it.
    over = statistics.median(r['connect_ms'] - r['floor_ms'] for r in rounds[ours])
    py_over = statistics.median(r['connect_ms'] - r['floor_ms'] for r in rounds[theirs])
    rtt, local_rtt = med(ours, 'rtt_us'), med(local, 'rtt_us')
    tput, local_tput = med(ours, 'throughput_mib_s'), med(local, 'throughput_mib_s')
    yes = lambda ok: '**yes**' if ok else 'no'  # noqa: E731
    w('| target | measured | met |')
    w('|---|---|:---:|')
    w('| warm connect ≤ floor + 10 ms | %+.2f ms over the floor (median of each run\'s '
      'connect − floor; Python %+.2f ms) | %s |' % (over, py_over, yes(over <= 10)))
    w('| rtt ≤ 2 × local rtt | %.1f µs = %.1f × local %.1f µs | %s |'
      % (rtt, rtt / local_rtt, local_rtt, yes(rtt <= 2 * local_rtt)))
    w('| throughput ≥ 80 %% of local | %.0f MiB/s = %.0f %% of local %.0f MiB/s | %s |'
      % (tput, 100 * tput / local_tput, local_tput, yes(tput >= 0.8 * local_tput)))
    w('')
    pipe_rtt, pipe_tput = med(pipe, 'rtt_us'), med(pipe, 'throughput_mib_s')
    pipe_over = statistics.median(r['connect_ms'] - r['floor_ms'] for r in rounds[pipe])
    w('The hop\'s stream runs on a direct socket to the process in the container '
      '(docs/containers.md, "Direct socket"): the parent, root here, takes one end of a '
      'socketpair the child made (`pidfd_getfd`) and keeps docker exec\'s pipe only as '
      'the lifeline. On docker exec\'s own pipe (`direct=off`, and where the parent '
      'may not take the socket) the same hop measures %.1f µs rtt and %.0f MiB/s '
      '(connect %+.2f ms over the floor): one byte back and forth through `docker exec '
      '-i C cat` takes **%.1f µs** (the docker client, dockerd and containerd\'s shim '
      'relay every byte), and `docker exec C head -c %d MiB /dev/zero`, read here in '
      '1 MiB chunks, delivers %.0f MiB/s, so no hop through the pipe can meet the rtt '
      'and throughput targets. The direct socket costs the connect one more docker '
      'exec round trip and a scan of `/proc` (%+.2f ms over the floor against '
      '%+.2f ms on the pipe, both within the target). Over the socket the stream is '
      'a Unix socketpair\'s, as a local context\'s is: the docker hop\'s rtt and '
      'throughput are a local context\'s, within this machine\'s spread from round '
      'to round.'
      % (pipe_rtt, pipe_tput, pipe_over, rtt_floor, args.mib, pull_floor, over, pipe_over))
    if args.note:
        w('')
        w(args.note)
    w('')
    w('Every round:')
    w('')
    keys = ['connect_ms', 'floor_ms', 'rtt_us', 'pipelined_calls_per_s',
            'throughput_mib_s', 'child_rss_kib']
    w('| round | side | ' + ' | '.join('`%s`' % k for k in keys)
      + ' | `docker exec` rtt µs | `docker exec` MiB/s |')
    w('|---|---|' + '---:|' * (len(keys) + 2))
    for i in range(args.rounds):
        for side, name in ((ours, 'mitogen-rs'), (pipe, 'direct=off'), (theirs, 'Python'),
                           (local, 'local')):
            r = rounds[side][i]
            floors = ('%.1f | %.0f' % (rounds['exec_rtt_us'][i], rounds['exec_pull_mib_s'][i])
                      if side == ours else ' | ')
            w('| %d | %s | ' % (i + 1, name)
              + ' | '.join(compare.fmt(k, r.get(k)) for k in keys) + ' | %s |' % floors)
    w('')
    w('Rerun: `python3 benches/containers.py%s` (as root, with a docker daemon).'
      % ('' if args.rounds == 3 else ' --rounds %d' % args.rounds))
    w(END)
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--mib', type=int, default=256)
    p.add_argument('--quick', action='store_true')
    p.add_argument('--output', default=os.path.join('docs', 'performance.md'))
    p.add_argument('--note', help='a sentence added to the section (e.g. the load)')
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit('benches/containers.py needs root (docker, debootstrap)')
    ensure_image()
    ours_bin, _ = compare.build()
    py = compare.python_venv()
    name = 'mitogen-bench-%d' % os.getpid()
    docker('run', '-d', '--name', name, IMAGE, 'sleep', 'infinity')
    atexit.register(lambda: subprocess.run(['docker', 'rm', '-f', name],
                                           stdout=subprocess.DEVNULL))
    common = ['--mib', str(args.mib)] + (['--quick'] if args.quick else [])
    cmds = {
        'ours': [ours_bin, 'bench', '--json', '--target', 'docker:' + name] + common,
        'theirs': [py, os.path.join(compare.ROOT, 'benches', 'python', 'bench_docker.py'),
                   '--docker', name] + common,
        'pipe': [ours_bin, 'bench', '--json', '--target', 'docker:%s,direct=off' % name]
        + common,
        'local': [ours_bin, 'bench', '--json'] + common,
    }
    rounds = {'ours': [], 'pipe': [], 'theirs': [], 'local': [], 'exec_rtt_us': [],
              'exec_pull_mib_s': []}
    for i in range(args.rounds):
        compare.log('containers round %d of %d' % (i + 1, args.rounds))
        order = ['ours', 'pipe', 'theirs', 'local']
        if i % 2:
            order.reverse()
        for side in order:
            rounds[side].append(compare.bench_json(cmds[side]))
            compare.log('  %s: %s' % (side, rounds[side][-1]))
        rounds['exec_rtt_us'].append(exec_rtt_us(name, 500 if args.quick else 2000))
        rounds['exec_pull_mib_s'].append(exec_pull_mib_s(name, args.mib))
        compare.log('  exec: %.1f µs, %.0f MiB/s' % (rounds['exec_rtt_us'][-1],
                                                   rounds['exec_pull_mib_s'][-1]))
    server = docker('version', '--format', '{{.Server.Version}}')
    text = render(rounds, args, 'Debian 12 minbase with python3, docker %s' % server)
    path = os.path.join(compare.ROOT, args.output)
    compare.write_section(path, BEGIN, END, text)
    compare.log('wrote %s' % os.path.relpath(path, compare.ROOT))


if __name__ == '__main__':
    main()
