"""The clinic's notification service: accepts messages and lists the ones it sent."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SENT = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/health", "/ready"):
            return self.reply(200, {"status": "ok"})
        return self.reply(200, {"service": "notify", "sent": SENT})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        message = self.rfile.read(length).decode(errors="replace")
        SENT.append(message)
        print(f"notification queued: {message}", flush=True)
        return self.reply(202, {"queued": message})

    def log_message(self, fmt, *args):
        pass


port = int(os.environ["PORT"])
# Loopback as a process; a container listens on all its interfaces (the Dockerfile sets HOST)
# and the engine publishes the port on the host's loopback.
host = os.environ.get("HOST", "127.0.0.1")
# The default listen backlog of 5 drops connections under bursts.
ThreadingHTTPServer.request_queue_size = 1024
server = ThreadingHTTPServer((host, port), Handler)
server.daemon_threads = True
print(f"notify listening on {host}:{port}", flush=True)
server.serve_forever()
