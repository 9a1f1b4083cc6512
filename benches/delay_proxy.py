#!/usr/bin/env python3
"""A slow link for ssh: a ProxyCommand that delays each direction.

    ssh -o 'ProxyCommand=python3 benches/delay_proxy.py --delay-ms 50 %h %p' HOST

connects to HOST:PORT and forwards stdin to the socket and the socket to
stdout, each byte leaving DELAY ms after it arrived (default 50 ms each way:
a 100 ms round trip). The kernel here has no netem, so the delay is made in
user space, and made so that it costs only latency:

* each direction has a reader that reads as fast as the source sends and
  stamps every chunk with the time it arrived, and a writer that sends each
  chunk when its time has come; so bytes keep their order, and throughput is
  what the link beneath carries (a sleep per read would cap it at one read
  per DELAY);
* an end of input (EOF) travels through the same queue, so a half-close
  arrives DELAY late too, after the bytes before it.

The proxy exits once both directions have ended. With DELAY_PROXY_LOG=FILE
it appends a line per chunk read (monotonic time, `up` or `down`, bytes):
the round trips of a connection, to be counted.
"""

import argparse
import collections
import os
import socket
import sys
import threading
import time

CHUNK = 256 * 1024


class DelayedPipe:
    """One direction: bytes read from `read` are written with `write` after
    `delay` seconds, in order."""

    def __init__(self, read, write, close, delay, name, log):
        self.read, self.write, self.close, self.delay = read, write, close, delay
        self.name, self.log = name, log
        self.queue = collections.deque()
        self.cond = threading.Condition()

    def reader(self):
        while True:
            try:
                data = self.read(CHUNK)
            except OSError:
                data = b''
            if self.log:
                self.log('%.6f %s %d\n' % (time.monotonic(), self.name, len(data)))
            with self.cond:
                self.queue.append((time.monotonic() + self.delay, data))
                self.cond.notify()
            if not data:
                return

    def writer(self):
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                due, data = self.queue.popleft()
            left = due - time.monotonic()
            if left > 0:
                time.sleep(left)
            if not data:
                self.close()
                return
            try:
                self.write(data)
            except OSError:
                # The far side is gone: drop what else comes.
                self.close()
                return

    def start(self):
        threads = [threading.Thread(target=self.reader, daemon=True),
                   threading.Thread(target=self.writer, daemon=True)]
        for t in threads:
            t.start()
        return threads[1]


def write_fd(fd):
    def write(data):
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    return write


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--delay-ms', type=float, default=50.0,
                   help='delay of each direction (default 50: a 100 ms round trip)')
    p.add_argument('host')
    p.add_argument('port', type=int)
    args = p.parse_args()
    delay = args.delay_ms / 1000.0
    sock = socket.create_connection((args.host, args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def shut_wr():
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close_stdout():
        try:
            os.close(1)
        except OSError:
            pass

    log = None
    if os.environ.get('DELAY_PROXY_LOG'):
        # For tracing round trips: when each chunk arrived, which way, how big.
        fp = open(os.environ['DELAY_PROXY_LOG'], 'a', buffering=1)
        lock = threading.Lock()

        def log(line):
            with lock:
                fp.write(line)
    up = DelayedPipe(lambda n: os.read(0, n), sock.sendall, shut_wr, delay, 'up', log)
    down = DelayedPipe(sock.recv, write_fd(1), close_stdout, delay, 'down', log)
    a = up.start()
    b = down.start()
    # The session is over when the server side has ended: ssh closes its end
    # of the proxy only after that.
    b.join()
    a.join(timeout=delay + 1.0)
    sys.exit(0)


if __name__ == '__main__':
    main()
