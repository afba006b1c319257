"""A webhook receiver on loopback, standard library only: what the tests (in process and
end to end) point endpoints at. It records every request as received and answers with the
status codes it is given, in turn; ``gate`` makes it hold each answer until set, to play a
slow receiver."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, statuses: tuple[int, ...] = (200,)):
        self.statuses = list(statuses)  # answered in turn; the last one from then on
        self.requests: list[Received] = []
        self.gate: threading.Event | None = None
        self.answer: bytes | None = None  # the body of every answer (default: "ok" / "no")
        self.arrived = threading.Event()  # set on every request
        self.answers: list[bool] = []  # per answer: was all of it taken?
        self.answered = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                receiver.arrived.set()
                if receiver.gate is not None:
                    receiver.gate.wait(30)  # bounded: a test that forgets to open it still ends
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                try:
                    self.wfile.write(receiver.answer if receiver.answer is not None else b"ok" if status < 300 else b"no")
                    receiver.answers.append(True)
                except OSError:  # the sender hung up before taking it all
                    receiver.answers.append(False)
                    self.close_connection = True
                receiver.answered.set()

            def log_message(self, format, *args):  # quiet: tests read self.requests
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
