"""A prediction server for trained runs (``transferlab serve``): FastAPI under uvicorn, PyTorch or ONNX engine,
micro-batching of concurrent requests, request limits and an optional API key."""

from transferlab.serving.app import create_app
from transferlab.serving.server import serve
from transferlab.serving.settings import ServeSettings, read_api_key

__all__ = ["ServeSettings", "create_app", "read_api_key", "serve"]
