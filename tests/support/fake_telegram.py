"""A fake Telegram Bot API on 127.0.0.1 for tests: records sendMessage calls, answers like the Bot API.

`status` makes it fail on purpose (500, or 429 with `retry_after`); only calls it answers with
`{"ok": true, ...}` count as sent messages. A wrong bot token gets the Bot API's 401.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email.message import Message

from tests.support.local_http import LocalHttpServer, Reply, free_port

BOT_TOKEN = "123456789:AAF-test-bot-token-s3cr3t"  # the `telegram` fixture's

@dataclass
class SentMessage:
    chat_id: str
    text: str
    message_id: int
    at: float = field(default_factory=time.time)


class FakeTelegram(LocalHttpServer):
    def __init__(self, token: str, port: int | None = None) -> None:
        super().__init__(port or free_port())
        self.token = token
        self.status = 200  # answer to give: 200, 500, 429 ...
        self.retry_after = 1  # with status 429
        self.messages: list[SentMessage] = []
        self.attempts = 0  # sendMessage calls seen, whatever was answered
        self.paths: list[str] = []
        self._changed = threading.Condition()

    def answer(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        with self._changed:
            self.paths.append(path)
        status, answer = self._bot_api(path, body)
        return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _bot_api(self, path: str, body: bytes) -> tuple[int, dict]:
        if path != f"/bot{self.token}/sendMessage":
            if path.startswith("/bot") and path.endswith("/sendMessage"):
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        with self._changed:
            self.attempts += 1
            self._changed.notify_all()
        if self.status == 429:
            return 429, {"ok": False, "error_code": 429,
                         "description": f"Too Many Requests: retry after {self.retry_after}",
                         "parameters": {"retry_after": self.retry_after}}
        if self.status != 200:
            return self.status, {"ok": False, "error_code": self.status,
                                 "description": "Internal Server Error"}
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not request.get("chat_id") or not request.get("text"):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        if len(request["text"]) > 4096:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        with self._changed:
            message = SentMessage(str(request["chat_id"]), request["text"], len(self.messages) + 1)
            self.messages.append(message)
            self._changed.notify_all()
        return 200, {"ok": True, "result": {
            "message_id": message.message_id, "date": int(message.at), "text": message.text,
            "chat": {"id": message.chat_id, "type": "private"},
            "from": {"id": 1, "is_bot": True, "first_name": "waorch test bot"}}}

    def texts(self) -> list[str]:
        with self._changed:
            return [m.text for m in self.messages]
