"""Memory per idle keep-alive connection of a running proxy.

Usage: idle_conns.py PORT PID N [silent]

Opens N connections to 127.0.0.1:PORT. Each sends one GET with the headers
a client library sends (Host, User-Agent, Accept, Accept-Encoding), reads
the whole answer and then stays open and silent; with `silent` they send
nothing at all. Prints the resident memory (Rss) of PID before, with the
N connections open (2 s later, after the allocator's purge delay) and the
growth per connection, as one JSON line.
"""
import json, resource, socket, sys, time

port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
silent = len(sys.argv) > 4 and sys.argv[4] == "silent"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

REQUEST = (
    b"GET /ok HTTP/1.1\r\nHost: bench\r\nUser-Agent: python-requests/2.32.3\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n"
)


def rss_kib():
    # smaps_rollup is exact; VmRSS in /proc/PID/status may lag (per-CPU
    # counters).
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                return int(line.split()[1])
    raise SystemExit("no Rss")


def answer(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed before the answer")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += s.recv(65536)


# Warm up: the proxy's pools and first-use allocations are not per
# connection. One request at a time, as below: a concurrent burst would grow
# the heap first and flatter the figure.
for _ in range(3):
    warm = []
    for _ in range(min(n, 200)):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(REQUEST)
        answer(s)
        warm.append(s)
    for s in warm:
        s.close()
time.sleep(2)
before = rss_kib()
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if not silent:
        s.sendall(REQUEST)
        answer(s)
    conns.append(s)
time.sleep(2)
after = rss_kib()
print(json.dumps({
    "connections": n,
    "mode": "silent" if silent else "one GET each",
    "rss_before_kib": before,
    "rss_after_kib": after,
    "kib_per_connection": round((after - before) / n, 2),
}))
for s in conns:
    s.close()
