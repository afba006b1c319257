"""In-process ASGI clients for the live-push tests: a WebSocket (channels.testing's
communicator would need daphne, which the platform does not use) and an SSE reader that
sees events as they are streamed (an ordinary test client waits for the body to end)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import unquote, urlparse

from asgiref.testing import ApplicationCommunicator


class Socket(ApplicationCommunicator):
    def __init__(self, application, path: str, headers=()):
        parsed = urlparse(path)
        super().__init__(application, {
            "type": "websocket", "path": unquote(parsed.path), "query_string": parsed.query.encode(),
            "headers": list(headers), "subprotocols": [],
        })

    async def connect(self, timeout: float = 3) -> bool:
        """True when accepted, False when refused at the handshake."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        return response["type"] == "websocket.accept"

    async def send_text(self, text: str) -> None:
        await self.send_input({"type": "websocket.receive", "text": text})

    async def send_json(self, data) -> None:
        await self.send_text(json.dumps(data))

    async def receive_json(self, timeout: float = 3) -> dict:
        message = await self.receive_output(timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def close_code(self, timeout: float = 3) -> int:
        message = await self.receive_output(timeout)
        assert message["type"] == "websocket.close", message
        return message["code"]

    async def disconnect(self, timeout: float = 3) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(timeout)


class EventStream:
    """``GET path`` on the ASGI app; ``events()`` parses what has been streamed so far."""

    def __init__(self, application, path: str, headers=()):
        parsed = urlparse(path)
        self.scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": unquote(parsed.path), "raw_path": parsed.path.encode(),
            "query_string": parsed.query.encode(), "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), *headers],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        }
        self.application = application
        self.sent: asyncio.Queue = asyncio.Queue()
        self.gone = asyncio.Event()
        self.buffer = b""
        self.status = None
        self.headers: dict[bytes, bytes] = {}

    async def open(self, timeout: float = 5) -> int:
        requested = False

        async def receive():
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        self.task = asyncio.create_task(self.application(self.scope, receive, self.sent.put))
        start = await asyncio.wait_for(self.sent.get(), timeout)
        self.status = start["status"]
        self.headers = {name.lower(): value for name, value in start["headers"]}
        return self.status

    async def body(self, timeout: float = 5) -> bytes:
        """The whole body of a response that ends (an error)."""
        while True:
            message = await asyncio.wait_for(self.sent.get(), timeout)
            self.buffer += message.get("body", b"")
            if not message.get("more_body"):
                return self.buffer

    async def event(self, timeout: float = 5) -> dict:
        """The next event or comment: {"id", "event", "data" (parsed), "comment", "retry"}."""
        while b"\n\n" not in self.buffer:
            message = await asyncio.wait_for(self.sent.get(), timeout)
            assert message["type"] == "http.response.body"
            assert message.get("more_body"), f"the stream ended: {self.buffer!r}"
            self.buffer += message["body"]
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        parsed: dict = {}
        for line in block.decode().split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                parsed["comment"] = value
            elif field == "data":
                parsed["data"] = json.loads(value)
            elif field in ("id", "event", "retry"):
                parsed[field] = value
        return parsed

    async def data_event(self, timeout: float = 5) -> dict:
        """The next event with data (skips retry and comments)."""
        while True:
            parsed = await self.event(timeout)
            if "data" in parsed:
                return parsed

    async def nothing(self, timeout: float = 0.3) -> bool:
        if b"\n\n" in self.buffer:
            return False
        try:
            message = await asyncio.wait_for(self.sent.get(), timeout)
        except TimeoutError:
            return True
        self.buffer += message.get("body", b"")
        return False

    async def close(self, timeout: float = 5) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, timeout)
