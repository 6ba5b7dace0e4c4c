"""`transferlab serve` fuzzed from its own OpenAPI schema with schemathesis: whatever request the schema lets it
generate (and the malformed variants it derives from them), the server answers without a 5xx and keeps serving."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, settings

from transferlab.backbones import create_backbone
from transferlab.models import TransferModel, build_head
from transferlab.serving import ServeSettings, create_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis fuzzes the API (the test extra)")
uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real uvicorn server on a free loopback port, in a thread, serving a small image classifier."""
    run = tmp_path_factory.mktemp("fuzz") / "run"
    run.mkdir()
    backbone = create_backbone("lenet", image_size=28)
    TransferModel(backbone, build_head("linear", backbone.num_features, 2, [], 0.0), ["a", "b"]).eval().save(run)
    app = create_app(run, settings=ServeSettings(max_items=4, max_request_bytes=1024 * 1024))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)


def test_no_request_generated_from_the_schema_is_a_server_error(served):
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_url(f"{served}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/predict", "/health", "/metadata"}
    seen = []
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def answered_without_a_server_error(case):
                response = case.call(base_url=served, timeout=30)
                seen.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.path}: {response.status_code} {response.text[:300]}")
                if response.status_code >= 400:  # every refusal is JSON naming the problem
                    assert response.json()["error"], response.text[:300]

            try:
                answered_without_a_server_error()
            except Unsatisfiable:  # nothing to make malformed: an operation without parameters or body
                assert mode == schemathesis.GenerationMode.NEGATIVE and operation.method.upper() == "GET"
    print(f"{len(seen)} fuzzed requests, statuses {dict(sorted(Counter(seen).items()))}")  # pytest -s shows it
    assert any(status >= 400 for status in seen)  # the fuzzing reached the refusals, not only the happy paths
    assert httpx.get(f"{served}/health", timeout=10).status_code == 200  # and the server still answers
