"""Payloads: protobuf JSON with proto field names, as the queue carries them."""

from __future__ import annotations

import json
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    """``message`` as compact protobuf JSON with proto field names, defaults omitted."""
    value = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class DecodeError(Exception):
    """A payload that does not decode as the topic's message."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


def decode(payload: bytes, cls: type[M]) -> M:
    """``payload`` read as ``cls``; unknown fields are ignored."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(f"the payload is not UTF-8 (at byte {e.start})", e.start) from None
    message = cls()
    try:
        json_format.Parse(text, message, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, json.JSONDecodeError):
            offset = len(text[: cause.pos].encode("utf-8"))
            raise DecodeError(f"{cause.msg} (at byte {offset})", offset) from None
        raise DecodeError(str(e)) from None
    return message
