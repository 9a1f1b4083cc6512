#!/usr/bin/env python3
"""Benchmark Python Mitogen's `router.docker()`, as the baseline of
`mitogen bench --target docker:CONTAINER` (benches/containers.py).

    "$PY" benches/python/bench_docker.py --docker CONTAINER [--python PATH]
        [--quick] [--mib N]

Prints one JSON object with the keys of bench_mitogen.py (same definitions,
same measuring functions), and:

    floor_ms   `docker exec --interactive -- CONTAINER true`, one sample
               before each timed connect (the command mitogen-rs's docker hop
               runs, with `true` for the first stage)
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_mitogen as b  # noqa: E402  (the measuring functions)


def floor_ms(container):
    t0 = time.perf_counter()
    subprocess.run(['docker', 'exec', '--interactive', '--', container, 'true'],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=b.CONNECT_TIMEOUT, check=True)
    return (time.perf_counter() - t0) * 1e3


def connect(router, args):
    return router.docker(container=args.docker, python_path=args.python,
                         connect_timeout=b.CONNECT_TIMEOUT)


def run(router, args):
    warm = connect(router, args)
    b.call(warm, b.noop)
    b.shutdown(warm)
    samples, floors = [], []
    for _ in range(args.reps):
        floors.append(floor_ms(args.docker))
        t0 = time.perf_counter()
        context = connect(router, args)
        b.call(context, b.noop)
        samples.append((time.perf_counter() - t0) * 1e3)
        b.shutdown(context)
    context = connect(router, args)
    try:
        rtt_us = b.measure_rtt_us(context, args.calls, args.warmup)
        pipelined = b.measure_pipelined(context, args.pipeline, args.pipeline_runs)
        rss_kib = b.call(context, b.vm_rss_kib)
        throughput, _, _ = b.measure_throughput(router, context, args.mib,
                                                args.throughput_runs)
    finally:
        b.shutdown(context)
    return {
        'connect_ms': round(b.median(samples), 3),
        'floor_ms': round(b.median(floors), 3),
        'rtt_us': round(rtt_us, 2),
        'pipelined_calls_per_s': round(pipelined, 1),
        'throughput_mib_s': round(throughput, 1),
        'child_rss_kib': rss_kib,
    }


def main():
    import argparse
    import json

    import mitogen.utils

    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--docker', required=True, metavar='CONTAINER')
    p.add_argument('--python', default='/usr/bin/python3',
                   help='the interpreter inside the container')
    p.add_argument('--quick', action='store_true')
    p.add_argument('--mib', type=int, default=256)
    args = p.parse_args()
    if args.quick:
        defaults = dict(reps=3, calls=500, warmup=50, pipeline=5000,
                        pipeline_runs=2, throughput_runs=1)
    else:
        defaults = dict(reps=10, calls=2000, warmup=100, pipeline=5000,
                        pipeline_runs=5, throughput_runs=3)
    for key, value in defaults.items():
        setattr(args, key, value)
    result = mitogen.utils.run_with_router(run, args)
    json.dump(result, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
