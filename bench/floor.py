#!/usr/bin/env python3
"""The kernel's cost of one small loopback write per delivery, on this machine.

The floor under every server that writes each delivery with a system call of
its own (Push and nchan both do, at the broadcast rows' rates): a writer
process pinned to the server's core sends one `--bytes` frame to each of
`--connections` loopback TCP connections, `--rate` rounds a second for
`--duration` seconds (the broadcast rows' shape), while a reader process
pinned to the load core drains them with epoll, as push-bench does. The
writer's system time per million writes is the floor, comparable with
push-bench's "server CPU s per M deliveries" (which is user + system time of
the server's processes); its user time is Python's and is not part of it.
Core 0's softirq time is shown too: loopback receive work the kernel may
charge to no process.

    python3 bench/floor.py                               # 1,000 × 100/s
    python3 bench/floor.py --connections 10000 --rate 10 # 10,000 × 10/s
"""

import argparse
import os
import select
import socket
import sys
import time


def core_softirq_s(cpu):
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                # user nice system idle iowait irq softirq
                return int(line.split()[7]) / hz
    return 0.0


def reader(addr, n, total, cpu, ready_w):
    os.sched_setaffinity(0, {cpu})
    socks = [socket.create_connection(addr) for _ in range(n)]
    ep = select.epoll()
    by_fd = {}
    for s in socks:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s
    os.write(ready_w, b"r")
    buf = bytearray(65536)
    got = 0
    while got < total:
        for fd, _ in ep.poll(5.0):
            try:
                got += by_fd[fd].recv_into(buf)
            except BlockingIOError:
                pass
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="rounds per second")
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--bytes", type=int, default=132, help="frame size (a 64-byte payload's WebSocket frame)")
    ap.add_argument("--writer-cpu", type=int, default=0)
    ap.add_argument("--reader-cpu", type=int, default=1)
    a = ap.parse_args()

    rounds = int(a.rate * a.duration)
    total = rounds * a.connections * a.bytes
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    addr = listener.getsockname()
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        listener.close()
        reader(addr, a.connections, total, a.reader_cpu, ready_w)
    os.sched_setaffinity(0, {a.writer_cpu})
    socks = []
    for _ in range(a.connections):
        s, _ = listener.accept()
        # As a server sets it: every write is sent at once.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    os.read(ready_r, 1)
    frame = b"x" * a.bytes
    period = 1.0 / a.rate
    t0, soft0, start = os.times(), core_softirq_s(a.writer_cpu), time.monotonic()
    for r in range(rounds):
        for s in socks:
            s.send(frame)
        pause = start + (r + 1) * period - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    t1, soft1 = os.times(), core_softirq_s(a.writer_cpu)
    _, status = os.waitpid(child, 0)
    if status != 0:
        sys.exit("reader failed")
    writes = rounds * a.connections
    per_m = 1e6 / writes
    print(
        f"{a.connections} connections x {a.rate:g}/s for {a.duration:g} s, {a.bytes}-byte writes: "
        f"{writes} writes; writer system {(t1.system - t0.system) * per_m:.2f} s/M, "
        f"user (Python) {(t1.user - t0.user) * per_m:.2f} s/M, "
        f"core {a.writer_cpu} softirq {(soft1 - soft0) * per_m:.2f} s/M"
    )


if __name__ == "__main__":
    main()
