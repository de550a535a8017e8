"""Server-sent events of a streamed completion, folded into text deltas and a final Result."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ._exceptions import make_status_error
from ._types import Result


class StreamAccumulator:
    """Feed it each SSE event's data (parsed by httpx-sse); it returns each text delta of
    choice 0 and builds the final Result."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.text = ""
        self.done = False
        self.finish_reason: str | None = None
        self.last: dict[str, Any] = {}
        self.ponder: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self.progress: tuple[int, int] | None = None
        """(finished samples, samples) from the server's progress chunks."""

    def feed(self, data: str) -> str | None:
        """The text delta carried by one SSE event's data, if any. Raises the error event's
        exception."""
        if data == "[DONE]":
            self.done = True
            return None
        event = json.loads(data)
        if "error" in event:
            raise make_status_error(_status_of(event["error"]), event, httpx.Headers())
        self.last = event
        meta = event.get("ponder") or {}
        if "progress" in meta:
            self.progress = (int(meta["progress"]["done"]), int(meta["progress"]["total"]))
        elif meta:
            self.ponder = meta
        if event.get("usage"):
            self.usage = event["usage"]
        delta = None
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            piece = (
                (choice.get("delta") or {}).get("content")
                if "delta" in choice
                else (choice.get("text"))
            )
            if piece:
                self.text += piece
                delta = piece
        return delta

    def result(self) -> Result:
        chat = self.kind == "chat"
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": self.text}
        else:
            choice["text"] = self.text
        body: dict[str, Any] = {
            "id": self.last.get("id"),
            "object": "chat.completion" if chat else "text_completion",
            "created": self.last.get("created"),
            "model": self.last.get("model"),
            "choices": [choice],
            "usage": self.usage,
        }
        if self.ponder is not None:
            body["ponder"] = self.ponder
        return Result.from_response(body)


def _status_of(error: dict[str, Any]) -> int:
    """The HTTP status of an error event: the server's own `status` (Ponder sends it), else
    guessed from the OpenAI `type`."""
    status = error.get("status")
    if isinstance(status, int) and 400 <= status <= 599:
        return status
    kind = error.get("type")
    return {"invalid_request_error": 400, "authentication_error": 401, "rate_limit_error": 429}.get(
        str(kind), 500
    )
