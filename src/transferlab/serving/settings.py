"""What a prediction server allows: request size, items per request, batching, timeout, and its API key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transferlab.errors import TransferlabError

__all__ = ["ServeSettings", "read_api_key"]


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of ``transferlab serve``.

    Attributes:
        max_batch: examples per model call at most; concurrent requests are batched together up to this many, and
            one request with more (up to ``max_items``) runs alone, split into calls of this many.
        max_items: examples per request.
        max_request_bytes: bytes per request body (a larger declared length is refused before it is read, and a
            body is cut off once it outgrows this, whatever its headers say).
        timeout: seconds a request may wait for its predictions (queue and model).
        batch_wait: seconds the batcher waits for more requests once one has arrived.
        api_key: when set, ``/predict`` and ``/metadata`` need it in the ``X-API-Key`` header (printable ASCII:
            Starlette reads headers as latin-1; never shown by ``repr``).
    """

    max_batch: int = 32
    max_items: int = 64
    max_request_bytes: int = 20 * 1024 * 1024
    timeout: float = 30.0
    batch_wait: float = 0.005
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_items", "max_request_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TransferlabError(f"{name} must be a positive whole number, got {value!r}")
        if not self.timeout > 0 or self.batch_wait < 0:
            raise TransferlabError(f"timeout must be positive and batch_wait not negative, got {self.timeout!r} and "
                                   f"{self.batch_wait!r}")
        if self.api_key is not None and not _is_header_value(self.api_key):
            raise TransferlabError("api_key must be printable ASCII (it travels in the X-API-Key header); the key "
                                   "given has other characters")

    def without_key(self) -> dict:
        """The settings to show (``/metadata``): everything but the key."""
        return {"max_batch": self.max_batch, "max_items": self.max_items, "max_request_bytes": self.max_request_bytes,
                "timeout_seconds": self.timeout, "api_key_required": self.api_key is not None}


def read_api_key(path: Path) -> str:
    """The API key in ``path`` (its first line, stripped); an error naming the file when it is empty, unreadable, or
    not printable ASCII."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TransferlabError(f"cannot read the API key file {path}: {exc}") from None
    key = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(key) < 8:
        raise TransferlabError(f"the API key file {path} must hold a key of at least 8 characters on its first line")
    if not _is_header_value(key):
        raise TransferlabError(f"the API key in {path} must be printable ASCII (it travels in the X-API-Key header, "
                               "which the server reads as latin-1, so it could never match)")
    return key


def _is_header_value(key: str) -> bool:
    return key.isascii() and key.isprintable()
