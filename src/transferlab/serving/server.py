"""``transferlab serve``: the app under uvicorn, on the loopback interface unless told otherwise."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from transferlab.errors import TransferlabError
from transferlab.export.inputs import require_package
from transferlab.serving.app import ENVIRONMENT, create_app
from transferlab.serving.settings import ServeSettings, read_api_key

__all__ = ["serve", "worker_threads"]

log = logging.getLogger("transferlab")


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
          workers: int = 1, settings: ServeSettings | None = None, api_key_file: Path | None = None) -> None:
    """Serve the model of ``run_dir`` until interrupted; ``workers`` processes each hold the model (uvicorn's
    workers), each batching its own requests.

    Raises:
        TransferlabError: a bad port or worker count, an unreadable key file, or a run the engine cannot serve
            (checked before the server starts).
    """
    uvicorn = require_package("uvicorn", "transferlab serve")
    if not 0 < port < 65536:
        raise TransferlabError(f"--port must be between 1 and 65535, got {port}")
    if workers < 1:
        raise TransferlabError(f"--workers must be at least 1, got {workers}")
    settings = settings or ServeSettings()
    api_key = read_api_key(api_key_file) if api_key_file is not None else None
    if api_key is None and not _is_loopback(host):
        log.warning("serving on %s without --api-key-file: anyone who reaches this port can use the model", host)
    app = create_app(run_dir, engine=engine, settings=ServeSettings(**{**asdict(settings), "api_key": api_key}))
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    del app  # checked the run; every worker builds its own
    values = {key: value for key, value in asdict(settings).items() if key != "api_key"}
    threads = worker_threads(workers)
    log.info("%d workers, %s", workers, f"{threads} torch/onnxruntime threads each" if threads else
             "threads per worker from OMP_NUM_THREADS")
    os.environ[ENVIRONMENT] = json.dumps({"run_dir": str(run_dir), "engine": engine, "settings": values,
                                          "api_key_file": str(api_key_file) if api_key_file else None,
                                          "threads": threads})
    # a worker loading its model (torch, weights) may not answer uvicorn's 5 s health ping: give it two minutes
    uvicorn.run("transferlab.serving.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="info", timeout_worker_healthcheck=120)


def worker_threads(workers: int) -> int | None:
    """Intra-op threads per worker process: the cores this process may use shared out (at least 1), so that N
    workers do not each start a pool as wide as the machine and fight over the cores; ``None`` (the user's own
    choice stands) when ``OMP_NUM_THREADS`` is set."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
