"""The one error a request can end in: an HTTP status, a short machine-readable reason and a sentence."""

from __future__ import annotations


class ServeError(Exception):
    """A request the service answers with ``status`` and ``{"error": "<reason>: <detail>", "reason": ...}``.

    ``detail`` is shown to the caller: it must never hold a token, a password or a presigned URL's query.
    """

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail

    def body(self) -> dict[str, str]:
        return {"error": f"{self.reason}: {self.detail}", "reason": self.reason, "detail": self.detail}
