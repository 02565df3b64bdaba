"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the judge tests."""

import http.server
import json
import threading
import time


class FakeServer:
    """Answers each POST with `reply(prompt, n) -> (status, body, delay_s[, headers])`; records calls.

    `body` is bytes (sent with its Content-Length unless `headers` sets one) or an iterable of
    `(chunk, pause_s)` streamed until the client hangs up (no Content-Length unless `headers` sets
    one; the connection closes after it). With `status=None` the chunks are the whole raw answer,
    status line and headers included. `sent` counts streamed bytes, `hung_up` streams the client
    abandoned. GETs (a followed redirect) are recorded in `gets` and answered 404.
    """

    def __init__(self, reply):
        self.reply, self.calls, self.gets, self.lock = reply, [], [], threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.sent = self.hung_up = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with server.lock:
                    server.gets.append(dict(self.headers))
                self.send_error(404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.calls.append((body, dict(self.headers)))
                    n = len(server.calls)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                status, payload, delay, *rest = server.reply(body["messages"][0]["content"], n)
                headers = rest[0] if rest else {}
                time.sleep(delay)
                with server.lock:  # before answering, so the client cannot send its next request first
                    server.in_flight -= 1
                try:
                    if status is not None:
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        if isinstance(payload, bytes) and "Content-Length" not in headers:
                            self.send_header("Content-Length", str(len(payload)))
                        for key, value in headers.items():
                            self.send_header(key, value)
                        self.end_headers()
                    if isinstance(payload, bytes):
                        self.wfile.write(payload)
                        return
                    for chunk, pause in payload:
                        time.sleep(pause)
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        with server.lock:
                            server.sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    with server.lock:
                        server.hung_up += 1  # the client gave up (timeout, size limit)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 64  # many clients connect at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.origin}/v1/chat/completions"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat(content):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
