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
    python3 bench/floor.py --connections 10000 --rate 2 --publish 6
        # the personal rows' shape, below

With `--publish K` the writer does what any server must on the personal
rows, and nothing else: it waits in epoll for a publisher connection, reads
the requests that arrived (the reader sends K `--request-bytes` requests at
a time, the groups spread evenly, as push-bench's pipelined publishers
arrive ~6 per read at 20,000/s), writes one frame per request to the next
subscriber connection and one `--answer-bytes` answer per request back, in
one write per read.
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


def reader(addr, n, total, cpu, ready_w, publish=None):
    os.sched_setaffinity(0, {cpu})
    socks = [socket.create_connection(addr) for _ in range(n)]
    if publish:
        publisher(addr, socks, total, ready_w, *publish)
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


def publisher(addr, socks, total, ready_w, group, request, gap, groups, answers_total):
    """The load side of `--publish`: paced groups of requests on one more
    connection, answers and frames drained with epoll."""
    pub = socket.create_connection(addr)
    ep = select.epoll()
    for s in socks + [pub]:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): s for s in socks + [pub]}
    os.write(ready_w, b"r")
    blob = b"p" * (request * group)
    buf = bytearray(65536)
    got = answered = 0
    start = time.monotonic()
    sent = 0
    while got < total or answered < answers_total:
        due = start + sent * gap
        if sent < groups and time.monotonic() >= due:
            pub.send(blob)
            sent += 1
            continue
        wait = max(0.0, due - time.monotonic()) if sent < groups else 5.0
        for fd, _ in ep.poll(wait):
            try:
                n = by_fd[fd].recv_into(buf)
            except BlockingIOError:
                continue
            if fd == pub.fileno():
                answered += n
            else:
                got += n
    os._exit(0)


def write_rounds(socks, frame, a, rounds, period, start):
    """One frame to every connection, `--rate` rounds a second."""
    for r in range(rounds):
        for s in socks:
            s.send(frame)
        pause = start + (r + 1) * period - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="rounds per second")
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--bytes", type=int, default=132, help="frame size (a 64-byte payload's WebSocket frame)")
    ap.add_argument("--publish", type=int, default=0,
                    help="serve requests from a publisher connection, K per group (0: write rounds on a timer)")
    ap.add_argument("--request-bytes", type=int, default=190, help="one publish request (push-bench's)")
    ap.add_argument("--answer-bytes", type=int, default=250, help="one publish answer")
    ap.add_argument("--writer-cpu", type=int, default=0)
    ap.add_argument("--reader-cpu", type=int, default=1)
    a = ap.parse_args()

    rounds = int(a.rate * a.duration)
    total = rounds * a.connections * a.bytes
    writes = rounds * a.connections
    publish = None
    if a.publish:
        gap = a.publish / (a.rate * a.connections)
        groups = writes // a.publish
        writes = groups * a.publish
        total = writes * a.bytes
        publish = (a.publish, a.request_bytes, gap, groups, writes * a.answer_bytes)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    addr = listener.getsockname()
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        listener.close()
        reader(addr, a.connections, total, a.reader_cpu, ready_w, publish)
    os.sched_setaffinity(0, {a.writer_cpu})
    socks = []
    for _ in range(a.connections):
        s, _ = listener.accept()
        # As a server sets it: every write is sent at once.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    pub = None
    if a.publish:
        pub, _ = listener.accept()
        pub.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    os.read(ready_r, 1)
    frame = b"x" * a.bytes
    period = 1.0 / a.rate
    t0, soft0, start = os.times(), core_softirq_s(a.writer_cpu), time.monotonic()
    if pub is not None:
        # Blocking reads: the writer sleeps until requests arrive, as a
        # server sleeps in epoll_wait.
        ep = select.epoll()
        ep.register(pub.fileno(), select.EPOLLIN)
        buf = bytearray(65536)
        done = carry = 0
        answer = b"a" * a.answer_bytes
        while done < writes:
            ep.poll()
            carry += pub.recv_into(buf)
            n, carry = divmod(carry, a.request_bytes)
            for i in range(done, done + n):
                socks[i % a.connections].send(frame)
            done += n
            pub.sendall(answer * n)
    else:
        write_rounds(socks, frame, a, rounds, period, start)
    t1, soft1, took = os.times(), core_softirq_s(a.writer_cpu), time.monotonic() - start
    _, status = os.waitpid(child, 0)
    if status != 0:
        sys.exit("reader failed")
    per_m = 1e6 / writes
    print(
        f"{a.connections} connections x {a.rate:g}/s for {a.duration:g} s"
        f"{f', served from publishes arriving {a.publish} at a time' if a.publish else ''}, {a.bytes}-byte writes: "
        f"{writes} writes; writer system {(t1.system - t0.system) * per_m:.2f} s/M, "
        f"user (Python) {(t1.user - t0.user) * per_m:.2f} s/M, "
        f"core {a.writer_cpu} softirq {(soft1 - soft0) * per_m:.2f} s/M, {writes / took:.0f} writes/s"
    )


if __name__ == "__main__":
    main()
