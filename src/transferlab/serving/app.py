"""The prediction server's FastAPI app: ``POST /predict``, ``GET /health``, ``GET /metadata`` (and FastAPI's
``/openapi.json`` and ``/docs``).

Every refused request is a 4xx JSON ``{"error": "..."}`` naming the problem: a body that is not what the model reads
(415), a bad field or an empty text (400), a body or image too large or too many items (413), a body sent with a
``Transfer-Encoding`` instead of a ``Content-Length`` (411), a missing or wrong API key (401). A prediction that
outlasts the timeout is a 504; any other failure is a 500 ``{"error": "internal error"}``, its traceback logged.
Concurrent requests are batched (`transferlab.serving.batcher.MicroBatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from transferlab.api import load
from transferlab.artifacts import read_model_info
from transferlab.errors import TransferlabError
from transferlab.export import open_engine
from transferlab.export.inputs import preprocessing_description
from transferlab.serving.batcher import MicroBatcher
from transferlab.serving.inputs import RequestError, read_examples
from transferlab.serving.settings import ServeSettings, read_api_key

__all__ = ["ENVIRONMENT", "app_from_environment", "create_app"]

log = logging.getLogger("transferlab")

ENVIRONMENT = "TRANSFERLAB_SERVE"  # JSON settings for `app_from_environment` (one app per uvicorn worker)
API_KEY_HEADER = "X-API-Key"

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object", "properties": {
                "texts": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "text": {"type": "string", "minLength": 1}}}},
        },
    }
}


def create_app(run_dir: str | Path, *, engine: str = "torch", settings: ServeSettings | None = None) -> FastAPI:
    """The app serving the model of ``run_dir`` with ``engine`` (``torch`` or ``onnx``).

    Raises:
        TransferlabError: the run cannot be loaded, or the engine cannot run it (e.g. no ONNX export).
    """
    settings = settings or ServeSettings()
    run_dir = Path(run_dir)
    model = load(run_dir)
    model.cache_features = False  # uploads must not fill the embedding cache (`Predictor.cache_features`)
    predictor = open_engine(model, run_dir, engine)
    modality = model.preprocess.modality
    info = read_model_info(run_dir)
    metadata = {
        "kind": model.kind,
        "backbone": model.backbone.spec.get("name"),
        "modality": modality,
        **{key: info[key] for key in ("classes", "tasks") if key in info},
        "preprocessing": preprocessing_description(model.preprocess),
        "engine": engine,
        "version": _version(),
        "limits": settings.without_key(),
    }
    batcher = MicroBatcher(lambda data: predictor.predict(data, num_workers=0), settings.max_batch,
                           settings.batch_wait)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="transferlab", version=_version() or "unknown", lifespan=lifespan,
                  description=f"Predictions of the {model.kind} model of {run_dir.name} ({engine} engine).")
    app.add_middleware(_BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(_InternalErrors)  # outermost of ours: what nothing else answered
    _add_error_handlers(app)
    require_key = _key_check(settings.api_key)

    @app.get("/health")
    async def health():
        """Whether the server is up, and what it serves."""
        return {"status": "ok", "kind": model.kind, "engine": engine}

    @app.get("/metadata", dependencies=[Depends(require_key)])
    async def get_metadata():
        """Classes (or tasks), backbone, preprocessing, engine, version and request limits."""
        return metadata

    @app.post("/predict", dependencies=[Depends(require_key)], openapi_extra=_PREDICT_BODY)
    async def predict(request: Request):
        """Predictions for several items: image (or audio) files as multipart ``files`` or one raw body; texts as
        JSON ``{"texts": [...]}``. One row per item, in the form ``transferlab predict --format json`` prints."""
        with tempfile.TemporaryDirectory(prefix="transferlab-serve-") as folder:
            examples, names = await read_examples(request, modality, settings.max_items, Path(folder))
            try:
                rows = await asyncio.wait_for(batcher.submit(examples), settings.timeout)
            except asyncio.TimeoutError:
                raise RequestError(504, f"the prediction took longer than {settings.timeout:g} s") from None
            except TransferlabError as exc:  # e.g. a file whose header looked fine and whose pixels do not decode
                message = str(exc)
                for path, name in zip(getattr(examples, "paths", None) or [], names, strict=False):
                    message = message.replace(str(path), repr(name))
                raise RequestError(400, message.replace(folder, "the request")) from None
        key = "text" if modality == "text" else "name"
        return {"predictions": [{key: name, **row} for name, row in zip(names, rows, strict=True)]}

    app.state.batcher = batcher
    return app


def app_from_environment() -> FastAPI:
    """`create_app` with the settings in the `ENVIRONMENT` variable: what each uvicorn worker process builds, with
    its share of the cores (`transferlab.serving.server.worker_threads`)."""
    values = json.loads(os.environ[ENVIRONMENT])
    threads = values.pop("threads", None)
    if threads:  # before the engine starts: onnxruntime sessions take torch's thread count
        torch.set_num_threads(threads)
    key_file = values.pop("api_key_file", None)
    settings = ServeSettings(**values.pop("settings"), api_key=read_api_key(Path(key_file)) if key_file else None)
    return create_app(values["run_dir"], engine=values["engine"], settings=settings)


def _key_check(api_key: str | None):
    """A dependency refusing requests without the API key (compared in constant time, never logged)."""
    expected = api_key.encode("utf-8") if api_key is not None else None

    async def require_key(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get(API_KEY_HEADER)
        if given is None:
            raise RequestError(401, f"this server needs an API key in the {API_KEY_HEADER} header")
        if not hmac.compare_digest(given.encode("utf-8"), expected):
            raise RequestError(401, f"the {API_KEY_HEADER} header does not hold this server's API key")

    return require_key


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def refused(_request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)


class _BodyLimit:
    """ASGI middleware bounding a request body to ``max_bytes``.

    A request with a ``Transfer-Encoding`` header is refused (411): its length is not declared, and with a
    ``Content-Length`` beside it the two could disagree. A declared length above ``max_bytes`` is refused before any
    of the body is read (413), and the bytes actually received are counted, so a body that outgrows the limit is
    refused (413) whatever its headers say.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if b"transfer-encoding" in headers:
            await _refuse(411, "the request has a Transfer-Encoding header: send the body with a Content-Length header "
                               "and no Transfer-Encoding", scope, receive, send)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _refuse(413, f"the request body has {length.decode('latin-1')} bytes; at most {self.max_bytes}",
                          scope, receive, send)
            return
        received = 0
        watched = _WatchedSend(send)

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestError(413, f"the request body has more than {self.max_bytes} bytes; at most "
                                            f"{self.max_bytes}")
            return message

        try:
            await self.app(scope, counted_receive, watched)
        except RequestError as exc:  # raised while reading the body, outside the app's own handlers
            if watched.started:
                raise
            await _refuse(exc.status, exc.message, scope, receive, send)


class _WatchedSend:
    """An ASGI ``send`` that remembers whether the response has started: after that, an error can no longer be
    answered with a response of its own."""

    def __init__(self, send):
        self.send = send
        self.started = False

    async def __call__(self, message):
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


class _InternalErrors:
    """ASGI middleware: an exception no handler answered (a bug, a failing engine) is logged with its traceback and
    answered with a 500 JSON ``{"error": "internal error"}``; the process keeps serving.

    A middleware rather than ``exception_handler(Exception)``: Starlette re-raises after such a handler, and uvicorn
    would log the traceback a second time.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = _WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if watched.started:
                raise
            await _refuse(500, "internal error", scope, receive, send)


async def _refuse(status: int, message: str, scope, receive, send) -> None:
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)


def _version() -> str | None:
    try:
        return version("transferlab")
    except PackageNotFoundError:
        return None
