#!/usr/bin/env python3
"""py_bench.py MODE ... : Python's multiprocessing, measured the way
bench/run.lua measures luamp, so the two are compared side by side.

  startjoin METHOD N      Process(target=empty).start(); join(): median us
  batch METHOD N B        start B, join all: median us per process
  firstof8 N              8 children block on pipes; release one; time until
                          multiprocessing.connection.wait notices: median us
  idle METHOD             kB of a blocked child: "rss private"
  pi N                    pure Python loop over N terms: terms/s
  poolmap N R             Pool(2).map(square, range(N)), default chunksize: median s of R
  poolasync N R           N Pool(2).apply_async(square, (i,)), each .get(): median s of R
  poolapply N             Pool(1).apply(square, (i,)) to an idle worker: median us of N
Prints one line of numbers.
"""
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import statistics
import sys
import time


def empty():
    pass


def block(conn):
    conn.recv()


def startjoin(method, n):
    ctx = mp.get_context(method)
    ctx.Process(target=empty).start()  # warm up (forkserver starts its server)
    v = []
    for _ in range(n):
        t = time.perf_counter()
        p = ctx.Process(target=empty)
        p.start()
        p.join()
        v.append((time.perf_counter() - t) * 1e6)
    return statistics.median(v)


def batch(method, n, b):
    ctx = mp.get_context(method)
    v = []
    for _ in range(n):
        t = time.perf_counter()
        ps = [ctx.Process(target=empty) for _ in range(b)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        v.append((time.perf_counter() - t) * 1e6 / b)
    return statistics.median(v)


def firstof8(n):
    ctx = mp.get_context("fork")
    v = []
    for i in range(n):
        pipes = [ctx.Pipe() for _ in range(8)]
        ps = [ctx.Process(target=block, args=(r,)) for r, _ in pipes]
        for p in ps:
            p.start()
        k = i % 8
        t = time.perf_counter()
        pipes[k][1].send(1)
        mpc.wait([p.sentinel for p in ps])
        v.append((time.perf_counter() - t) * 1e6)
        for _, w in pipes:
            w.send(1)
        for p in ps:
            p.join()
    return statistics.median(v)


def memory_of(pid):
    rss = priv = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k == "Rss":
                rss = int(rest.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                priv += int(rest.split()[0])
    return rss, priv


def idle(method):
    ctx = mp.get_context(method)
    r, w = ctx.Pipe()
    ready_r, ready_w = ctx.Pipe()
    p = ctx.Process(target=idle_child, args=(r, ready_w))
    p.start()
    ready_r.recv()
    rss, priv = memory_of(p.pid)
    w.send(1)
    p.join()
    return f"{rss} {priv}"


def idle_child(r, ready):
    ready.send(1)
    r.recv()


def pi(n):
    t = time.perf_counter()
    s = 0.0
    for k in range(1, n + 1):
        s += (1.0 if k % 2 else -1.0) / (2 * k - 1)
    return n / (time.perf_counter() - t)


def square(x):
    return x * x


def poolmap(n, r):
    with mp.get_context("fork").Pool(2) as p:
        p.map(square, range(8))
        v = []
        for _ in range(r):
            t = time.perf_counter()
            p.map(square, range(n))
            v.append(time.perf_counter() - t)
    return statistics.median(v)


def poolasync(n, r):
    with mp.get_context("fork").Pool(2) as p:
        p.map(square, range(8))
        v = []
        for _ in range(r):
            t = time.perf_counter()
            rs = [p.apply_async(square, (i,)) for i in range(n)]
            for x in rs:
                x.get()
            v.append(time.perf_counter() - t)
    return statistics.median(v)


def poolapply(n):
    with mp.get_context("fork").Pool(1) as p:
        p.apply(square, (1,))
        v = []
        for i in range(n):
            t = time.perf_counter()
            p.apply(square, (i,))
            v.append((time.perf_counter() - t) * 1e6)
    return statistics.median(v)


def lockpair(n):
    lock = mp.Lock()
    v = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        v.append((time.perf_counter() - t) * 1e9 / n)
    return statistics.median(v)


def _adder(v, n, b, out, i):
    b.wait()
    t = time.perf_counter()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    out[i] = time.perf_counter() - t


def valueadd(n):
    """Two processes each add 1 n times under the Value's lock: adds/s."""
    ctx = mp.get_context("fork")
    v, b, out = ctx.Value("q", 0), ctx.Barrier(2), ctx.Array("d", 2)
    ps = [ctx.Process(target=_adder, args=(v, n, b, out, i)) for i in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    assert v.value == 2 * n
    return 2 * n / max(out[:])


if __name__ == "__main__":
    mode = sys.argv[1]
    a = sys.argv[2:]
    if mode == "startjoin":
        print(f"{startjoin(a[0], int(a[1])):.2f}")
    elif mode == "batch":
        print(f"{batch(a[0], int(a[1]), int(a[2])):.2f}")
    elif mode == "firstof8":
        print(f"{firstof8(int(a[0])):.2f}")
    elif mode == "idle":
        print(idle(a[0]))
    elif mode == "poolmap":
        print(f"{poolmap(int(a[0]), int(a[1])):.6f}")
    elif mode == "poolasync":
        print(f"{poolasync(int(a[0]), int(a[1])):.6f}")
    elif mode == "poolapply":
        print(f"{poolapply(int(a[0])):.2f}")
    elif mode == "lockpair":
        print(f"{lockpair(int(a[0])):.2f}")
    elif mode == "valueadd":
        print(f"{valueadd(int(a[0])):.4g}")
    elif mode == "pi":
        print(f"{pi(int(a[0])):.4g}")
    else:
        sys.exit(2)
