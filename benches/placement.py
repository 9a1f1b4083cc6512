"""Runs `mitogen bench` with every process of the measured path kept on chosen CPUs.

Free-running, the scheduler often puts a reader on its writer's CPU (a socket
write wakes the reader as a "sync" wake-up: the kernel expects the writer to
sleep next and hands it the writer's CPU, but a streaming writer keeps
writing), and two processes that could each have had a CPU take turns on one.
That halves a one-hop stream in some runs and not in others. Pinning shows
what each path does when it gets the CPUs: the master on the first CPU, each
hop's context by its depth in the chain, the path split into as many
contiguous groups as there are CPUs (four processes on two CPUs: master and
first hop on CPU 0, the last two hops on CPU 1).

The bench process is started on CPU 0; a watcher thread finds its contexts
below it in the process tree (argv[0] `mitogen:NAME`) every 20 ms and moves
every thread of each to its CPU. Threads a context starts later inherit the
CPU. Contexts of the connect samples come and go before the measured chain;
pinning them too is harmless.
"""

import json
import os
import subprocess
import threading


def cpu_for(depth, processes, cpus):
    """The CPU of the process `depth` hops from the master (0: the master)."""
    return min(depth * cpus // processes, cpus - 1)


def _children(pid):
    kids = []
    try:
        for tid in os.listdir('/proc/%d/task' % pid):
            with open('/proc/%d/task/%s/children' % (pid, tid)) as f:
                kids.extend(int(k) for k in f.read().split())
    except (OSError, ValueError):
        pass
    return kids


def _contexts_of(root_pid):
    """(pid, depth) of every mitogen context below `root_pid`, depth being its
    level in the process tree (the bench's own children: 1). Walks the tree
    through /proc/PID/task/TID/children, which costs far less than reading
    every process of the system each time."""
    found = []
    level = [(root_pid, 0)]
    while level:
        nxt = []
        for pid, depth in level:
            for kid in _children(pid):
                try:
                    with open('/proc/%d/cmdline' % kid, 'rb') as f:
                        argv0 = f.read().split(b'\0')[0]
                except OSError:
                    continue
                if argv0.startswith(b'mitogen:'):
                    found.append((kid, depth + 1))
                    nxt.append((kid, depth + 1))
        level = nxt
    return found


def _threads(pid):
    try:
        return len(os.listdir('/proc/%d/task' % pid))
    except OSError:
        return 0


def _pin(pid, cpu):
    try:
        for tid in os.listdir('/proc/%d/task' % pid):
            os.sched_setaffinity(int(tid), {cpu})
    except OSError:
        pass  # gone already


def pinned_bench_json(cmd, hops):
    """`cmd` (a `mitogen bench --json` command for a target of `hops` hops)
    with the path pinned as described above; its JSON object."""
    cpus = len(os.sched_getaffinity(0))
    processes = hops + 1
    done = threading.Event()
    pinned = {}

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {0}))

    def watch():
        while not done.is_set():
            for pid, depth in _contexts_of(proc.pid):
                # Again whenever the context has started a thread: one made
                # while we were pinning the others may have missed it.
                key = (depth, _threads(pid))
                if pinned.get(pid) != key:
                    _pin(pid, cpu_for(depth, processes, cpus))
                    pinned[pid] = key
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        done.set()
        watcher.join()
    if proc.returncode != 0:
        raise RuntimeError('%s exited with %s' % (' '.join(cmd), proc.returncode))
    return json.loads(out.strip().splitlines()[-1])
