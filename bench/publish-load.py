#!/usr/bin/env python3
"""Load for bench/publish.sh: an echo server, and clients that time connections.

  publish-load.py serve PORT               echo server on 127.0.0.1:PORT (one thread, epoll)
  publish-load.py latency PORT N           N x (connect, 1-byte echo, close); prints the
                                           median and p90 in microseconds
  publish-load.py hold PORT N CMD...       opens N connections, echoes once on each, runs
                                           CMD while all are open, prints its output
"""
import selectors
import socket
import statistics
import subprocess
import sys
import time


def serve(port):
    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is lsock:
                while True:
                    try:
                        c, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, ConnectionError):
                data = b""
            if data:
                try:
                    s.sendall(data)
                except OSError:
                    pass
            else:
                sel.unregister(s)
                s.close()


def echo_once(port):
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(b"x")
    if c.recv(1) != b"x":
        raise SystemExit("no echo on port %d" % port)
    return c


def latency(port, n):
    for _ in range(50):  # warm-up
        echo_once(port).close()
    times = []
    for _ in range(n):
        t = time.perf_counter_ns()
        echo_once(port).close()
        times.append((time.perf_counter_ns() - t) / 1000)
    times.sort()
    print("%.1f %.1f" % (statistics.median(times), times[int(len(times) * 0.9)]))


def hold(port, n, cmd):
    conns = [echo_once(port) for _ in range(n)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(out, end="")
    for c in conns:
        c.close()


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "serve":
        serve(port)
    elif mode == "latency":
        latency(port, int(sys.argv[3]))
    elif mode == "hold":
        hold(port, int(sys.argv[3]), sys.argv[4:])
    else:
        raise SystemExit(__doc__)
