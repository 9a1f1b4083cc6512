#!/usr/bin/env python3
"""Benchmark Python Mitogen contexts, as a baseline for `mitogen bench`.

Run with the interpreter printed by setup_venv.sh:

    PY=$(benches/python/setup_venv.sh | tail -n1)
    "$PY" benches/python/bench_mitogen.py [--quick] [--reps N] [--mib N] [--via N]
    "$PY" benches/python/bench_mitogen.py --ssh HOST [--ssh-port N] [--ssh-user U]
        [--identity FILE] [--ssh-option OPT]... [--quick] [--mib N]
    "$PY" benches/python/bench_mitogen.py --sudo USER [--python PATH] [--quick] [--mib N]
    "$PY" benches/python/bench_mitogen.py --ssh HOST [ssh options as above]
        [--ssh-hops N] [--sudo USER] [--python PATH] [--quick] [--mib N]

Prints one JSON object on stdout with the same keys and definitions as
`mitogen bench --json` (every figure is a median over repetitions):

    connect_ms             warm master: start a fresh context and get the result
                           of its first no-op call
    rtt_us                 one sequential no-op call
    pipelined_calls_per_s  M no-op calls issued at once, then all results collected
    throughput_mib_s       child streams --mib MiB to the master in 1 MiB chunks
    child_rss_kib          child's VmRSS after the rtt and pipelined calls

With --via N every figure is taken against a context reached through a chain
of N intermediate local contexts instead of a direct child.

With --ssh HOST the measured contexts are made with `router.ssh()` (host keys
ignored, no compression, as `mitogen bench` over ssh), and two keys are added,
measured with the same ssh options in the same run:

    ssh_floor_ms           `ssh HOST true`, one sample before each timed connect
    cat_mib_s              MiB/s `ssh HOST 'cat > /dev/null'` takes in (--mib
                           MiB, timed from the remote shell's first output until
                           ssh exits), one run after each throughput run
    pull_mib_s             the same from the remote to the master (`dd` of
                           /dev/zero), the streaming benchmark's direction

With --sudo USER the measured contexts are made with `router.sudo(username=USER)`
(no password: the caller needs a NOPASSWD rule), as `mitogen bench --target
sudo:USER`, and one key is added, measured in the same run:

    floor_ms               `sudo -n -u USER true`, one sample before each timed
                           connect

The sudo child runs --python (default /usr/bin/python3): the venv's interpreter
may live where USER cannot read it (a pyenv under /root).

With --ssh HOST and --ssh-hops N (N >= 2) or --sudo USER, the measured context
is the end of a chain, as `mitogen bench --target HOST/HOST/sudo:USER`: N ssh
hops to HOST, each made from the one before (`router.ssh(via=...)`, the same
options every time), then, with --sudo, `router.sudo(username=USER, via=...)`.
Every hop runs --python. connect_ms starts the whole chain afresh for each
sample and shuts it all down after (warm: a first chain, untimed, has been
made and taken down before), and floor_ms is added:

    floor_ms               the sum of every hop's floor, each run on this
                           machine, one after the other before each timed
                           connect: `ssh HOST true` per ssh hop (the options of
                           ssh_floor_ms) and `sudo -n -u USER true`

(all on this machine, so the floor is the hops' own cost when HOST is this
machine and the ssh login user is the caller). A chain has no ssh_floor_ms,
cat_mib_s or pull_mib_s.

Python Mitogen has no remote cache (it sends its modules on every connection),
so there is no cold/warm distinction and no connect_cold_ms.

The functions called remotely live in this file: the children import it as
`__main__`, which Mitogen serves with everything below the
`if __name__ == '__main__'` guard stripped. Module-level code therefore runs
in every child, which is why it imports nothing the children do not need.
"""

import os
import time

import mitogen.core


# --- Functions run in the child ----------------------------------------------

def noop():
    return None


def vm_rss_kib():
    with open('/proc/self/status') as fp:
        for line in fp:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError('VmRSS missing from /proc/self/status')


def stream_chunks(sender, n_chunks, chunk_size):
    # One shared bytes object: the benchmark measures transport, not the cost
    # of building payloads in the child.
    chunk = b'\0' * chunk_size
    for _ in range(n_chunks):
        sender.send(chunk)
    # None marks the end; closing the sender instead would also work but its
    # "dead" message is indistinguishable from a lost connection.
    sender.send(None)
    return os.getpid()


# --- Master side -------------------------------------------------------------

MIB = 1024 * 1024

# Generous per-operation limits: a healthy run stays far below them, they exist
# so a wedged child turns into an error instead of a hang.
CALL_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 30.0
CHUNK_TIMEOUT = 60.0


def median(values):
    import statistics
    return statistics.median(values)


def call(context, fn, *args):
    """context.call() with a timeout; plain call() can block forever."""
    return context.call_async(fn, *args).get(timeout=CALL_TIMEOUT).unpickle()


def shutdown(context):
    context.shutdown().get(timeout=SHUTDOWN_TIMEOUT)


def shutdown_all(contexts):
    """Shuts a chain down innermost first: a hop cannot be shut down while
    routing for contexts beyond it without those being orphaned noisily."""
    for context in reversed(contexts):
        shutdown(context)


class SshChain(object):
    """--ssh-hops ssh hops to the same host, each from the one before, then
    an optional sudo hop: the chain `mitogen bench --target HOST/.../sudo:U`
    makes."""

    def __init__(self, ssh, hops, sudo, python):
        self.ssh = ssh
        self.hops = hops
        self.sudo = sudo
        self.python = python

    def connect(self, router):
        """Every hop's context, the measured one last."""
        contexts = []
        try:
            for _ in range(self.hops):
                contexts.append(router.ssh(
                    via=contexts[-1] if contexts else None, connect_timeout=CONNECT_TIMEOUT,
                    python_path=self.python, **self.ssh.kwargs()))
            if self.sudo is not None:
                contexts.append(router.sudo(via=contexts[-1], connect_timeout=CONNECT_TIMEOUT,
                                            **self.sudo.kwargs()))
        except BaseException:
            shutdown_all(contexts)
            raise
        return contexts

    def floor_ms(self):
        """Every hop's floor, one after the other, summed."""
        total = sum(self.ssh.true_ms() for _ in range(self.hops))
        if self.sudo is not None:
            total += self.sudo.true_ms()
        return total


def measure_chain_connect_ms(router, chain, reps):
    """Median connect time of a whole chain, and the median of its floors."""
    # A first chain primes the master, as in measure_connect_ms.
    contexts = chain.connect(router)
    try:
        call(contexts[-1], noop)
    finally:
        shutdown_all(contexts)

    samples = []
    floors = []
    for _ in range(reps):
        floors.append(chain.floor_ms())
        t0 = time.perf_counter()
        contexts = chain.connect(router)
        try:
            call(contexts[-1], noop)
            samples.append((time.perf_counter() - t0) * 1e3)
        finally:
            shutdown_all(contexts)
    return median(samples), median(floors)


def connect(router, chain, ssh=None, sudo=None):
    via = chain[-1] if chain else None
    if ssh is not None:
        return router.ssh(via=via, connect_timeout=CONNECT_TIMEOUT, **ssh.kwargs())
    if sudo is not None:
        return router.sudo(via=via, connect_timeout=CONNECT_TIMEOUT, **sudo.kwargs())
    return router.local(via=via, connect_timeout=CONNECT_TIMEOUT)


class SudoFloor(object):
    """`sudo -n -u USER true`: what sudo itself costs, the floor of a sudo
    connect (the same sudo from PATH, non-interactive)."""

    def __init__(self, args):
        self.user = args.sudo
        self.python = args.python

    def kwargs(self):
        return dict(username=self.user, python_path=self.python)

    def true_ms(self):
        import subprocess
        t0 = time.perf_counter()
        subprocess.run(['sudo', '-n', '-u', self.user, 'true'], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=CONNECT_TIMEOUT, check=True)
        return (time.perf_counter() - t0) * 1e3


class SshFloor(object):
    """Plain ssh to the benchmarked host, with the options Python Mitogen's
    ssh method gives ssh (mitogen/ssh.py, get_boot_command), so that it
    differs from a mitogen connection only in the remote command."""

    def __init__(self, args):
        self.host = args.ssh
        self.port = args.ssh_port
        self.user = args.ssh_user
        self.identity = args.identity
        self.options = list(args.ssh_option or [])

    def kwargs(self):
        ssh_args = []
        for opt in self.options:
            ssh_args += ['-o', opt]
        return dict(hostname=self.host, port=self.port, username=self.user,
                    identity_file=self.identity, check_host_keys='ignore',
                    ssh_args=ssh_args, compression=False)

    def argv(self, remote):
        bits = ['ssh', '-o', 'LogLevel ERROR']
        if self.user:
            bits += ['-l', self.user]
        if self.port is not None:
            bits += ['-p', str(self.port)]
        if self.identity:
            bits += ['-o', 'IdentitiesOnly yes', '-i', self.identity]
        bits += ['-o', 'ServerAliveInterval 15', '-o', 'ServerAliveCountMax 3',
                 '-o', 'BatchMode yes',
                 '-o', 'StrictHostKeyChecking no',
                 '-o', 'UserKnownHostsFile /dev/null',
                 '-o', 'GlobalKnownHostsFile /dev/null']
        for opt in self.options:
            bits += ['-o', opt]
        return bits + [self.host, remote]

    def true_ms(self):
        import subprocess
        t0 = time.perf_counter()
        subprocess.run(self.argv('true'), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=CONNECT_TIMEOUT + CALL_TIMEOUT, check=True)
        return (time.perf_counter() - t0) * 1e3

    def cat_mib_s(self, total_mib):
        """MiB/s `ssh HOST 'cat > /dev/null'` takes in (master -> remote)."""
        chunk = b'\0' * MIB

        def feed(proc):
            for _ in range(total_mib):
                proc.stdin.write(chunk)
        return self.transfer('echo ready && exec cat > /dev/null', total_mib, feed)

    def pull_mib_s(self, total_mib):
        """MiB/s plain ssh delivers from the remote to the master: the
        direction of the streaming benchmark."""
        def drain(proc):
            received = 0
            while True:
                got = proc.stdout.read(MIB)
                if not got:
                    break
                received += len(got)
            if received != total_mib * MIB:
                raise RuntimeError('received %d bytes, expected %d'
                                   % (received, total_mib * MIB))
        remote = ('echo ready && exec dd if=/dev/zero bs=%d count=%d 2>/dev/null'
                  % (MIB, total_mib))
        return self.transfer(remote, total_mib, drain)

    def transfer(self, remote, total_mib, work):
        """Runs `remote`, which prints 'ready' and then moves the bytes that
        `work(proc)` feeds or drains; MiB/s from 'ready' until ssh exits."""
        import subprocess
        import threading
        proc = subprocess.Popen(self.argv(remote), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                bufsize=0)
        started = []
        failed = []

        # A thread does the work so that the main thread can enforce a
        # deadline: killing a wedged ssh unblocks the thread.
        def run():
            try:
                ready = b''
                while len(ready) < 6:
                    got = proc.stdout.read(6 - len(ready))
                    if not got:
                        raise RuntimeError('ssh ended before the transfer')
                    ready += got
                if ready != b'ready\n':
                    raise RuntimeError('unexpected output %r' % ready)
                started.append(time.perf_counter())
                work(proc)
            except Exception as e:
                failed.append(e)
            finally:
                # Closing stdin is what lets `cat` (and then ssh) finish.
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            status = proc.wait(timeout=CONNECT_TIMEOUT + 4 * CHUNK_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError('ssh %r did not finish in time; killed it' % remote)
        ended = time.perf_counter()
        worker.join(CALL_TIMEOUT)
        if failed:
            raise failed[0]
        if status != 0 or not started:
            raise RuntimeError('ssh %r failed with status %s' % (remote, status))
        return total_mib / (ended - started[0])


def measure_connect_ms(router, chain, reps, ssh=None, sudo=None):
    """Median connect time, and the median ssh or sudo floor when there is one."""
    # A first context primes the master: module source caches, importer
    # state and the broker are all warm before timing starts.
    warm = connect(router, chain, ssh, sudo)
    call(warm, noop)
    shutdown(warm)

    samples = []
    floors = []
    for _ in range(reps):
        if ssh is not None:
            # Interleaved, so that drift affects ssh alone and mitogen over
            # ssh alike.
            floors.append(ssh.true_ms())
        if sudo is not None:
            floors.append(sudo.true_ms())
        t0 = time.perf_counter()
        context = connect(router, chain, ssh, sudo)
        call(context, noop)
        samples.append((time.perf_counter() - t0) * 1e3)
        shutdown(context)
    return median(samples), (median(floors) if floors else None)


def measure_rtt_us(context, calls, warmup):
    for _ in range(warmup):
        call(context, noop)
    # Per-call samples: a round trip is ~100 us here, far above
    # perf_counter()'s resolution, and the median discards scheduler noise.
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call(context, noop)
        samples.append(time.perf_counter() - t0)
    return median(samples) * 1e6


def measure_pipelined(context, calls, runs):
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        receivers = [context.call_async(noop) for _ in range(calls)]
        for receiver in receivers:
            receiver.get(timeout=CALL_TIMEOUT).unpickle()
        rates.append(calls / (time.perf_counter() - t0))
    return median(rates)


def measure_throughput(router, context, total_mib, runs, ssh=None):
    """Median streaming rate, and the median ssh cat rate when over ssh."""
    rates = []
    cat = []
    pull = []
    for _ in range(runs):
        receiver = mitogen.core.Receiver(router)
        try:
            t0 = time.perf_counter()
            call_receiver = context.call_async(
                stream_chunks, receiver.to_sender(), total_mib, MIB)
            received = 0
            while True:
                chunk = receiver.get(timeout=CHUNK_TIMEOUT).unpickle()
                if chunk is None:
                    break
                received += len(chunk)
            call_receiver.get(timeout=CALL_TIMEOUT).unpickle()
            elapsed = time.perf_counter() - t0
        finally:
            receiver.close()
        if received != total_mib * MIB:
            raise RuntimeError('received %d bytes, expected %d'
                               % (received, total_mib * MIB))
        rates.append(total_mib / elapsed)
        if ssh is not None:
            cat.append(ssh.cat_mib_s(total_mib))
            pull.append(ssh.pull_mib_s(total_mib))
    return (median(rates), (median(cat) if cat else None),
            (median(pull) if pull else None))


def run_chain(router, args):
    """Every figure against the end of an ssh (and sudo) chain."""
    chain = SshChain(SshFloor(args), args.ssh_hops,
                     SudoFloor(args) if args.sudo else None, args.python)
    connect_ms, floor_ms = measure_chain_connect_ms(router, chain, args.reps)
    contexts = chain.connect(router)
    try:
        context = contexts[-1]
        rtt_us = measure_rtt_us(context, args.calls, args.warmup)
        pipelined = measure_pipelined(context, args.pipeline, args.pipeline_runs)
        rss_kib = call(context, vm_rss_kib)
        throughput, _, _ = measure_throughput(router, context, args.mib,
                                              args.throughput_runs)
    finally:
        shutdown_all(contexts)
    return {
        'connect_ms': round(connect_ms, 3),
        'floor_ms': round(floor_ms, 3),
        'rtt_us': round(rtt_us, 2),
        'pipelined_calls_per_s': round(pipelined, 1),
        'throughput_mib_s': round(throughput, 1),
        'child_rss_kib': rss_kib,
    }


def run(router, args):
    if args.ssh and (args.ssh_hops > 1 or args.sudo):
        return run_chain(router, args)
    ssh = SshFloor(args) if args.ssh else None
    sudo = SudoFloor(args) if args.sudo else None
    chain = []
    try:
        for _ in range(args.via):
            chain.append(connect(router, chain))

        connect_ms, floor_ms = measure_connect_ms(router, chain, args.reps, ssh, sudo)

        context = connect(router, chain, ssh, sudo)
        try:
            rtt_us = measure_rtt_us(context, args.calls, args.warmup)
            pipelined = measure_pipelined(context, args.pipeline,
                                          args.pipeline_runs)
            # Taken before streaming so it reflects a context that has served
            # calls, not one still holding freed megabyte buffers.
            rss_kib = call(context, vm_rss_kib)
            throughput, cat, pull = measure_throughput(router, context, args.mib,
                                                 args.throughput_runs, ssh)
        finally:
            shutdown(context)
    finally:
        # Innermost first: a hop cannot be shut down while routing for
        # contexts beyond it without those being orphaned noisily.
        for hop in reversed(chain):
            shutdown(hop)

    result = {
        'connect_ms': round(connect_ms, 3),
        'rtt_us': round(rtt_us, 2),
        'pipelined_calls_per_s': round(pipelined, 1),
        'throughput_mib_s': round(throughput, 1),
        'child_rss_kib': rss_kib,
    }
    if ssh is not None:
        result['ssh_floor_ms'] = round(floor_ms, 3)
        result['cat_mib_s'] = round(cat, 1)
        result['pull_mib_s'] = round(pull, 1)
    if sudo is not None:
        result['floor_ms'] = round(floor_ms, 3)
    return result


def parse_args():
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='fewer repetitions, for smoke tests')
    parser.add_argument('--reps', type=int,
                        help='fresh contexts timed for connect_ms (default 10)')
    parser.add_argument('--mib', type=int, default=256,
                        help='MiB streamed per throughput run (default 256)')
    parser.add_argument('--via', type=int, default=0,
                        help='intermediate local contexts between master '
                             'and the measured context (default 0)')
    parser.add_argument('--ssh', metavar='HOST',
                        help='measure ssh contexts on HOST instead of local ones')
    parser.add_argument('--ssh-port', type=int, metavar='N', help='ssh port')
    parser.add_argument('--ssh-user', metavar='U', help='ssh login user')
    parser.add_argument('--identity', metavar='FILE', help='ssh private key')
    parser.add_argument('--ssh-option', action='append', metavar='OPT',
                        help='ssh option (ssh -o OPT), repeatable')
    parser.add_argument('--ssh-hops', type=int, default=1, metavar='N',
                        help='ssh hops to HOST, each from the one before (default 1)')
    parser.add_argument('--sudo', metavar='USER',
                        help='measure contexts made with router.sudo(username=USER) '
                             '(with --ssh: through the ssh hops)')
    parser.add_argument('--python', default='/usr/bin/python3', metavar='PATH',
                        help='interpreter of the sudo child and of every hop of a '
                             'chain (default /usr/bin/python3)')
    parser.add_argument('--timeout', type=float, default=900.0,
                        help='abort the whole run after this many seconds')
    args = parser.parse_args()

    if args.quick:
        defaults = dict(reps=3, calls=500, warmup=50, pipeline=5000,
                        pipeline_runs=2, throughput_runs=1)
    else:
        defaults = dict(reps=10, calls=2000, warmup=100, pipeline=5000,
                        pipeline_runs=5, throughput_runs=3)
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.reps < 1 or args.mib < 1 or args.via < 0:
        parser.error('--reps and --mib must be >= 1, --via >= 0')
    if args.ssh and args.via:
        parser.error('--ssh and --via cannot be combined')
    if args.sudo and args.via:
        parser.error('--sudo cannot be combined with --via')
    if args.ssh_hops < 1 or (args.ssh_hops > 1 and not args.ssh):
        parser.error('--ssh-hops must be >= 1 and needs --ssh HOST')
    if not args.ssh and (args.ssh_port or args.ssh_user or args.identity
                         or args.ssh_option):
        parser.error('ssh options need --ssh HOST')
    return args


def main():
    import faulthandler
    import json
    import sys

    import mitogen.utils

    args = parse_args()
    # Last-resort guard for anything without a timeout of its own (e.g. broker
    # shutdown): dump stacks and exit nonzero rather than hang a CI job.
    # Children see their parent's pipe close and exit on their own.
    faulthandler.dump_traceback_later(args.timeout, exit=True)

    result = mitogen.utils.run_with_router(run, args)
    faulthandler.cancel_dump_traceback_later()
    json.dump(result, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
