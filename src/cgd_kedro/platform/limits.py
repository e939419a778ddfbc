"""A request-body size limit enforced while the body streams in.

Starlette parses a multipart upload (spooling it to a temporary file) before the endpoint sees
it, so a size check in the endpoint comes after the whole body is on disk. This ASGI middleware
refuses a request whose ``Content-Length`` is over the limit before reading any of it, and stops
reading a body without one (chunked) as soon as the bytes received pass the limit: the client
gets ``413`` and nothing more is spooled.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(BaseException):
    """A BaseException: FastAPI turns any Exception raised while parsing a body into a 400."""


def _limit_text(limit: int) -> str:
    return f"{limit / 2**20:.0f} MiB" if limit >= 2**20 else f"{limit} bytes"


class BodySizeLimit:
    """Refuse HTTP request bodies over ``max_bytes`` with 413,
    reading at most ``max_bytes`` of them."""

    def __init__(self, app: ASGIApp, max_bytes: int, shown_limit: int | None = None) -> None:
        """``shown_limit``: the limit the messages name
        (the upload limit, without the form's overhead)."""
        self.app = app
        self.max_bytes = max_bytes
        self.shown = _limit_text(shown_limit if shown_limit is not None else max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            size = int(declared)
            await self._refuse(
                send,
                f"upload refused: the request is {size / 2**20:.1f} MiB, over the "
                f"{self.shown} upload limit",
            )
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(
                    send, f"upload refused: the request is over the {self.shown} upload limit"
                )

    @staticmethod
    async def _refuse(send: Send, text: str) -> None:
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
