#!/usr/bin/env python3
"""Recording HTTP/1.1 backend for Scripts/fault-scenario.sh (Python 3 standard library only).

    python3 Scripts/recording_backend.py --port 0 --log /tmp/x/b1.log [--host 127.0.0.1] [--delay-ms 2]

- GET /health        -> 200 {"status":"ok"}
- any other GET      -> 200 {"handled_by":PORT}
- POST / PUT / PATCH -> 200 {"handled_by":PORT} (the body is read by Content-Length and ignored)
- every request that carries an X-Request-Id header appends one line "METHOD ID" to the --log file
  before it is answered. The file is opened O_APPEND and each line is one os.write(), so it is on
  disk (page cache) the moment it is written: a SIGKILL right after cannot lose it, and a restart on
  the same port with the same --log keeps appending. Duplicate deliveries are then found by counting
  ids over all backends' logs.
- --delay-ms N: every request that is recorded is answered N ms after it was logged (an application
  that works a little on each request). Without it a request spends nearly all of its time unread in
  the socket buffer (one process, one GIL), so a SIGKILL would almost never catch a request that the
  backend already received, and a balancer that replays such a request would go unnoticed.

Keep-alive works (protocol_version HTTP/1.1, Content-Length on every answer). Prints
"Backend running on port N" once listening (N is the chosen port when --port 0). Exits on SIGTERM/SIGINT.
"""
import argparse
import http.server
import os
import signal
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True, help="file that gets one 'METHOD X-Request-Id' line per request")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="answer a recorded request this long after logging it")
    args = ap.parse_args()

    log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    delay = args.delay_ms / 1000.0

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True   # TCP_NODELAY
        wbufsize = 1 << 16               # head + body leave in one send (flushed per request by the base class)

        def version_string(self):
            return "recording-backend"

        def log_message(self, fmt, *a):  # no per-request stderr lines
            pass

        def _record(self):
            rid = self.headers.get("X-Request-Id")
            if rid is not None:
                os.write(log_fd, f"{self.command} {rid.strip()}\n".encode("latin-1", "replace"))
                if delay > 0:
                    time.sleep(delay)

        def _answer(self, status, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Handled-By", str(self.server.server_port))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _read_body(self):
            n = int(self.headers.get("Content-Length") or 0)
            while n > 0:
                chunk = self.rfile.read(min(n, 1 << 16))
                if not chunk:
                    raise ConnectionError("body cut short")
                n -= len(chunk)

        def do_GET(self):
            if self.path == "/health":
                self._answer(200, '{"status":"ok"}')
                return
            self._record()
            self._answer(200, '{"handled_by":%d}' % self.server.server_port)

        do_HEAD = do_GET

        def do_POST(self):
            self._read_body()
            self._record()
            self._answer(200, '{"handled_by":%d}' % self.server.server_port)

        do_PUT = do_POST
        do_PATCH = do_POST
        do_DELETE = do_POST

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 1024   # the default listen backlog (5) drops SYNs when a pool opens many connections
        daemon_threads = True

    server = Server((args.host, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"Backend running on port {server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
