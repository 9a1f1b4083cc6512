#!/usr/bin/env python3
"""Python Mitogen's file transfer, as a baseline for `mitogen bench --files-only`.

Run with the interpreter printed by setup_venv.sh (benches/files.py does):

    PY=$(benches/python/setup_venv.sh | tail -n1)
    "$PY" benches/python/bench_files.py --src FILE --tree DIR --scratch DIR
        [--ssh HOST --ssh-port N --ssh-user U --identity FILE [--ssh-option OPT]...]
        [--runs N]

This is how the original moves files: `mitogen.service.FileService` lives in
the master (registered there with a `mitogen.service.Pool`, the source's
directory allowed with `register_prefix`), and the child pulls each file with
`FileService.get()` (the `get_file` of ansible_mitogen's target.py), writing
it to a temporary name beside the destination and renaming it into place, as
ansible_mitogen's transfer does. One get per file, one file after the other:
what the original does for a tree.

Prints one JSON object on stdout (medians over --runs; the context is started
before any timing, as `mitogen bench` does):

    push_mib_s           the child gets --src (master -> child)
    fetch_mib_s          the master gets that copy back from the child's own
                         FileService (started there on first use; the master
                         has parent authority, so nothing is registered)
    small_files_per_s    the child gets every file under --tree, one get each
    master_peak_rss_kib  VmHWM of this process after all of it
    child_peak_rss_kib   VmHWM of the child after all of it

--scratch is a directory on the child's host (this machine, over loopback
ssh too) where the copies are made; it is emptied after each timed run.

The functions called in the child live in this file, which the child imports
as `__main__` (with the `if __name__ == '__main__'` part stripped).
"""

import os
import time

import mitogen.core


# --- Functions run in the child ----------------------------------------------

def pull(master, path, out_path):
    """Gets `path` from the master's FileService into `out_path`, through a
    temporary file renamed into place when complete."""
    import mitogen.service
    tmp = '%s.tmp%d' % (out_path, os.getpid())
    with open(tmp, 'wb') as fp:
        ok, meta = mitogen.service.FileService.get(master, path, fp)
    if not ok:
        os.unlink(tmp)
        raise RuntimeError('transfer of %r was cut short' % (path,))
    os.rename(tmp, out_path)
    return meta['size']


def pull_tree(master, root, rel_paths, out_dir):
    """Gets every file of `rel_paths` (below `root` in the master) into
    `out_dir`, one FileService get each, one after the other."""
    made = set()
    for rel in rel_paths:
        parent = os.path.dirname(os.path.join(out_dir, rel))
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        pull(master, os.path.join(root, rel), os.path.join(out_dir, rel))
    return len(rel_paths)


def remove(path):
    import shutil
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def sync():
    os.sync()


def peak_rss_kib():
    with open('/proc/self/status') as fp:
        for line in fp:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    raise RuntimeError('VmHWM missing from /proc/self/status')


# --- Master side -------------------------------------------------------------

MIB = 1024 * 1024
CALL_TIMEOUT = 600.0
CONNECT_TIMEOUT = 30.0


def call(context, fn, *args):
    return context.call_async(fn, *args).get(timeout=CALL_TIMEOUT).unpickle()


def median(values):
    import statistics
    return statistics.median(values)


def ssh_kwargs(args):
    ssh_args = []
    for opt in args.ssh_option or []:
        ssh_args += ['-o', opt]
    return dict(hostname=args.ssh, port=args.ssh_port, username=args.ssh_user,
                identity_file=args.identity, check_host_keys='ignore',
                ssh_args=ssh_args, compression=False)


def tree_files(root):
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    out.sort()
    return out


def run(router, args):
    import mitogen.service

    src = os.path.abspath(args.src)
    tree = os.path.abspath(args.tree)
    scratch = os.path.abspath(args.scratch)
    service = mitogen.service.FileService(router)
    pool = mitogen.service.Pool(router, services=[service])
    try:
        service.register_prefix(os.path.dirname(src))
        service.register_prefix(tree)
        if args.ssh:
            context = router.ssh(connect_timeout=CONNECT_TIMEOUT, **ssh_kwargs(args))
        else:
            context = router.local(connect_timeout=CONNECT_TIMEOUT)
        try:
            return measure(router, context, src, tree, scratch, args.runs, args.keep_trees)
        finally:
            context.shutdown(wait=True)
    finally:
        pool.stop()


def measure(router, context, src, tree, scratch, runs, keep_trees=False):
    import mitogen.service

    master = router.myself()
    size = os.path.getsize(src)
    rels = tree_files(tree)
    pushed = os.path.join(scratch, 'py-push')
    fetched = os.path.join(scratch, 'py-fetch')
    push, fetch, small = [], [], []
    trees = []
    for run in range(runs):
        # Every timed run starts with no dirty pages of an earlier one.
        call(context, remove, pushed)
        call(context, sync)
        t0 = time.perf_counter()
        got = call(context, pull, master, src, pushed)
        push.append(size / MIB / (time.perf_counter() - t0))
        if got != size:
            raise RuntimeError('pushed %d bytes, expected %d' % (got, size))

        remove(fetched)
        os.sync()
        t0 = time.perf_counter()
        with open(fetched, 'wb') as fp:
            ok, _ = mitogen.service.FileService.get(context, pushed, fp)
        fetch.append(size / MIB / (time.perf_counter() - t0))
        if not ok or os.path.getsize(fetched) != size:
            raise RuntimeError('fetch of %r was cut short' % pushed)
        remove(fetched)

        # A fresh place each run, removed at the end (see `mitogen bench
        # --files`: ext4 without a journal is slow to create files right
        # after deleting many).
        tree_out = os.path.join(scratch, 'py-tree-%d-%d' % (os.getpid(), run))
        trees.append(tree_out)
        call(context, sync)
        t0 = time.perf_counter()
        n = call(context, pull_tree, master, tree, rels, tree_out)
        small.append(n / (time.perf_counter() - t0))
    result = {
        'push_mib_s': round(median(push), 1),
        'fetch_mib_s': round(median(fetch), 1),
        'small_files_per_s': round(median(small), 1),
        'master_peak_rss_kib': peak_rss_kib(),
        'child_peak_rss_kib': call(context, peak_rss_kib),
    }
    for path in [pushed] + ([] if keep_trees else trees):
        call(context, remove, path)
    return result


def parse_args():
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--src', required=True, help='the large file to push and fetch')
    p.add_argument('--tree', required=True, help='a directory of small files')
    p.add_argument('--scratch', required=True,
                   help="a directory on the child's host for the copies")
    p.add_argument('--runs', type=int, default=1, help='timed runs of each (default 1)')
    p.add_argument('--keep-trees', action='store_true',
                   help='leave the tree copies for the caller to remove (see benches/files.py)')
    p.add_argument('--ssh', metavar='HOST', help='an ssh context on HOST instead of a local one')
    p.add_argument('--ssh-port', type=int, metavar='N')
    p.add_argument('--ssh-user', metavar='U')
    p.add_argument('--identity', metavar='FILE')
    p.add_argument('--ssh-option', action='append', metavar='OPT')
    p.add_argument('--timeout', type=float, default=1800.0,
                   help='abort the whole run after this many seconds')
    args = p.parse_args()
    if args.runs < 1:
        p.error('--runs must be >= 1')
    return args


def main():
    import faulthandler
    import json
    import sys

    import mitogen.utils

    args = parse_args()
    faulthandler.dump_traceback_later(args.timeout, exit=True)
    result = mitogen.utils.run_with_router(run, args)
    faulthandler.cancel_dump_traceback_later()
    json.dump(result, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
