"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the judge tests."""

import http.server
import json
import threading
import time


class FakeServer:
    """Answers each POST with `reply(prompt, n) -> (status, body bytes, delay_s)`; records calls."""

    def __init__(self, reply):
        self.reply, self.calls, self.lock = reply, [], threading.Lock()
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.calls.append((body, dict(self.headers)))
                    n = len(server.calls)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                status, payload, delay = server.reply(body["messages"][0]["content"], n)
                time.sleep(delay)
                with server.lock:  # before answering, so the client cannot send its next request first
                    server.in_flight -= 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat(content):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
