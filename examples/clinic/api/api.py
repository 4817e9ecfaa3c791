"""The clinic's patients API: JSON over HTTP/1.1 keep-alive, Python standard library only."""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATIENTS = [{"id": 1, "name": "Ada Lovelace"}, {"id": 2, "name": "Alan Turing"}]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/health", "/ready"):
            return self.send_json(200, {"status": "ok"})
        if self.path.startswith("/api/patients"):
            return self.send_json(200, PATIENTS)
        if self.path.startswith("/api"):
            return self.send_json(200, {
                "service": "api",
                "message": os.environ.get("GREETING", "hello"),
                "revision": os.environ.get("SLIPWAY_REVISION"),
                "instance": os.environ.get("SLIPWAY_INSTANCE"),
            })
        return self.send_json(404, {"error": f"no such path {self.path}"})

    def log_message(self, fmt, *args):
        if os.environ.get("LOG_LEVEL") == "debug":
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    # The default listen backlog of 5 drops connections under bursts.
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"api listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
