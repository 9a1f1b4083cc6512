#!/usr/bin/env python3
"""Benchmark Python Mitogen local contexts, as a baseline for `mitogen bench`.

Run with the interpreter printed by setup_venv.sh:

    PY=$(benches/python/setup_venv.sh | tail -n1)
    "$PY" benches/python/bench_mitogen.py [--quick] [--reps N] [--mib N] [--via N]

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


def connect(router, chain):
    via = chain[-1] if chain else None
    return router.local(via=via, connect_timeout=CONNECT_TIMEOUT)


def measure_connect_ms(router, chain, reps):
    # A first context primes the master: module source caches, importer
    # state and the broker are all warm before timing starts.
    warm = connect(router, chain)
    call(warm, noop)
    shutdown(warm)

    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        context = connect(router, chain)
        call(context, noop)
        samples.append((time.perf_counter() - t0) * 1e3)
        shutdown(context)
    return median(samples)


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


def measure_throughput(router, context, total_mib, runs):
    rates = []
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
    return median(rates)


def run(router, args):
    chain = []
    try:
        for _ in range(args.via):
            chain.append(connect(router, chain))

        connect_ms = measure_connect_ms(router, chain, args.reps)

        context = connect(router, chain)
        try:
            rtt_us = measure_rtt_us(context, args.calls, args.warmup)
            pipelined = measure_pipelined(context, args.pipeline,
                                          args.pipeline_runs)
            # Taken before streaming so it reflects a context that has served
            # calls, not one still holding freed megabyte buffers.
            rss_kib = call(context, vm_rss_kib)
            throughput = measure_throughput(router, context, args.mib,
                                            args.throughput_runs)
        finally:
            shutdown(context)
    finally:
        # Innermost first: a hop cannot be shut down while routing for
        # contexts beyond it without those being orphaned noisily.
        for hop in reversed(chain):
            shutdown(hop)

    return {
        'connect_ms': round(connect_ms, 3),
        'rtt_us': round(rtt_us, 2),
        'pipelined_calls_per_s': round(pipelined, 1),
        'throughput_mib_s': round(throughput, 1),
        'child_rss_kib': rss_kib,
    }


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
