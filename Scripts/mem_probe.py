#!/usr/bin/env python3
"""Memory probes of a running balancer for Scripts/memory-and-hang.sh (Python 3 standard library only).

    python3 Scripts/mem_probe.py idle  --pid PID --port PORT [--conns 2000] [--hold 3] [--after 5]
    python3 Scripts/mem_probe.py burst --pid PID --port PORT [--count 200] [--mib 8] [--after 5]

idle:  RSS of PID (VmRSS in /proc/PID/status) before and after opening --conns keep-alive connections to
       127.0.0.1:PORT, each of which sends one `GET /_lb/health HTTP/1.1` and reads the answer, then stays
       open and idle; RSS --after seconds after closing them all.
burst: RSS before, at peak (VmRSS sampled every 10 ms, and the kernel's VmHWM high-water mark) and --after
       seconds after --count concurrent `POST /` requests of --mib MiB each (Content-Length, body of 'a's),
       sent by one thread per request that all start together.
Prints one JSON object (the figures) as its last line. Talks to 127.0.0.1 only; every socket has a timeout,
and the whole probe is bounded by --deadline seconds.
"""
import argparse
import json
import os
import resource
import selectors
import socket
import threading
import time


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss(pid):
    return status_kib(pid, "VmRSS")


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_response(sock, deadline):
    """Reads one HTTP/1.1 response with Content-Length; returns (status, bytes) or raises."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        rest += chunk
    return status, len(head) + 4 + length


def idle(a):
    limit = raise_nofile(a.conns + 256)
    if limit < a.conns + 64:
        raise SystemExit(f"mem_probe: open-file limit {limit} too low for {a.conns} connections")
    deadline = time.monotonic() + a.deadline
    req = b"GET /_lb/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    # warm-up: a few short connections so that first-use allocations are not counted per connection
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", a.port), timeout=5) as s:
            s.sendall(req)
            read_response(s, time.monotonic() + 5)
    time.sleep(1)
    out = {"conns_wanted": a.conns, "rss_before_kib": rss(a.pid), "fds_before": fds(a.pid)}
    socks, failed, statuses = [], 0, {}
    t = time.monotonic()
    for _ in range(a.conns):
        if time.monotonic() > deadline:
            break
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            s.sendall(req)
            socks.append(s)
        except OSError:
            failed += 1
    answered = []
    for s in socks:
        try:
            st, _ = read_response(s, min(deadline, time.monotonic() + 5))
            statuses[st] = statuses.get(st, 0) + 1
            answered.append(s)
        except (OSError, ValueError, IndexError):
            failed += 1
            s.close()
    out["open_s"] = round(time.monotonic() - t, 2)
    time.sleep(a.hold)
    # still open? an idle keep-alive connection has nothing to read; EOF means the server closed it
    sel = selectors.DefaultSelector()
    for s in answered:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed_by_server = 0
    for key, _ in sel.select(timeout=0):
        try:
            if key.fileobj.recv(1) == b"":
                closed_by_server += 1
        except OSError:
            closed_by_server += 1
    sel.close()
    out.update({"conns_open": len(answered) - closed_by_server, "failed": failed, "closed_by_server": closed_by_server,
                "statuses": statuses, "rss_open_kib": rss(a.pid), "fds_open": fds(a.pid)})
    held = max(1, out["conns_open"])
    out["per_conn_bytes"] = round((out["rss_open_kib"] - out["rss_before_kib"]) * 1024 / held)
    for s in answered:
        s.close()
    time.sleep(a.after)
    out.update({"rss_after_close_kib": rss(a.pid), "fds_after_close": fds(a.pid), "after_s": a.after,
                "hwm_kib": status_kib(a.pid, "VmHWM")})
    return out


def burst(a):
    raise_nofile(a.count + 256)
    size = a.mib * 1024 * 1024
    # To the echo backend's sink (it reads and counts any body): every upload crosses lbserve whole.
    head = (f"POST /_echo/sink HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    body = b"a" * size
    time.sleep(1)
    out = {"count": a.count, "mib": a.mib, "rss_before_kib": rss(a.pid), "hwm_before_kib": status_kib(a.pid, "VmHWM")}
    peak = [out["rss_before_kib"], 0.0]
    stop = threading.Event()
    t0 = time.monotonic()

    def sampler():
        while not stop.is_set():
            try:
                v = rss(a.pid)
            except (OSError, KeyError):
                return
            if v > peak[0]:
                peak[0], peak[1] = v, time.monotonic() - t0
            time.sleep(0.01)

    results, lock = {}, threading.Lock()
    start = threading.Barrier(a.count + 1)
    deadline = time.monotonic() + a.deadline

    def one():
        try:
            start.wait(timeout=30)
            with socket.create_connection(("127.0.0.1", a.port), timeout=30) as s:
                s.settimeout(max(1.0, deadline - time.monotonic()))
                s.sendall(head)
                s.sendall(body)
                st, _ = read_response(s, deadline)
            key = str(st)
        except Exception as e:  # noqa: BLE001 - every failure is counted by kind
            key = type(e).__name__
        with lock:
            results[key] = results.get(key, 0) + 1

    smp = threading.Thread(target=sampler, daemon=True)
    smp.start()
    threads = [threading.Thread(target=one, daemon=True) for _ in range(a.count)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    start.wait(timeout=30)
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    out["burst_s"] = round(time.monotonic() - t0, 2)
    out["unfinished"] = sum(t.is_alive() for t in threads)
    time.sleep(0.5)
    stop.set()
    smp.join(timeout=2)
    out.update({"results": results, "rss_peak_sampled_kib": peak[0], "peak_at_s": round(peak[1], 2),
                "hwm_kib": status_kib(a.pid, "VmHWM"), "rss_end_kib": rss(a.pid)})
    time.sleep(a.after)
    out.update({"rss_after_kib": rss(a.pid), "after_s": a.after})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("idle", "burst"):
        p = sub.add_parser(name)
        p.add_argument("--pid", type=int, required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--after", type=float, default=5)
        p.add_argument("--deadline", type=float, default=60, help="bound on the probe's traffic, seconds")
    sub.choices["idle"].add_argument("--conns", type=int, default=2000)
    sub.choices["idle"].add_argument("--hold", type=float, default=3, help="seconds the connections stay idle before RSS is read")
    sub.choices["burst"].add_argument("--count", type=int, default=200)
    sub.choices["burst"].add_argument("--mib", type=int, default=8)
    a = ap.parse_args()
    out = idle(a) if a.cmd == "idle" else burst(a)
    print(json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
