"""The service on Ray Serve (service/ray_app.py): a local Ray instance, 2 ingress and 2 model replicas on the CPU,
a PostgreSQL style store. Requests reach both model replicas, a style stored through one replica is used through
the other, and a replica killed under load leaves the rest answering."""

from __future__ import annotations

import pickle
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from adain.errors import InputError
from adain.images import read_resized, to_uint8
from adain.stylizer import Stylizer
from service.runtime.jobs import OutOfDeviceMemory, WorkerFailed
from service.settings import Settings

from .postgres_fixtures import PostgresServer, new_database
from .service_fixtures import REPO, SIZE, assert_batched_equal, free_port, pixels

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from service.ray_app import INGRESS_HEADER, Ingress, Model  # noqa: E402  (needs ray)
from service.runtime.ray_engine import MODEL_HEADER  # noqa: E402  (needs ray)

REPLICAS = {"autoscaling_config": {"min_replicas": 2, "max_replicas": 2, "target_ongoing_requests": 4},
            "graceful_shutdown_wait_loop_s": 0.2, "graceful_shutdown_timeout_s": 2}


@pytest.fixture(scope="module")
def server(weight_files: dict, postgres_server: PostgresServer) -> Iterator[str]:
    """The application on a local Ray instance; its URL once both ingress replicas are ready."""
    w = weight_files["vgg16"]
    settings = Settings(encoder=w["encoder_st"], decoder=w["decoder_st"], device="cpu",
                        db=new_database(postgres_server), content_size=SIZE, style_size=SIZE, batch_window_ms=20,
                        decode_threads=1, log_level="warning")
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 108 characters
    ray.init(num_cpus=6, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=temp,
             object_store_memory=80 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "RAY_SERVE_LOG_TO_STDERR": "0"}})
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        model = Model.options(**REPLICAS, ray_actor_options={"num_cpus": 1, "num_gpus": 0})
        ingress = Ingress.options(**REPLICAS, ray_actor_options={"num_cpus": 0.5})
        serve.run(ingress.bind(model.bind(settings), settings), name="adain", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        ready: set[str] = set()
        deadline = time.monotonic() + 120
        while len(ready) < 2:  # both ingress replicas have reached a model replica
            assert time.monotonic() < deadline, "the application did not become ready"
            try:
                r = httpx.get(f"{url}/readyz", timeout=10)
                if r.status_code == 200:
                    ready.add(r.headers[INGRESS_HEADER])
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def content(content_paths: list[Path]) -> bytes:
    return content_paths[0].read_bytes()


@pytest.fixture(scope="module")
def style(style_paths: list[Path]) -> bytes:
    return style_paths[0].read_bytes()


def stylize(url: str, content: bytes, style: bytes | None = None, style_id: str | None = None) -> httpx.Response:
    files = [("content", ("c.jpg", content, "image/jpeg"))]
    if style is not None:
        files.append(("style", ("s.jpg", style, "image/jpeg")))
    return httpx.post(f"{url}/v1/stylize", files=files, data={"style_id": style_id} if style_id else {},
                      timeout=60)


def in_parallel(calls: int, fn, *args) -> list[httpx.Response]:
    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(lambda _: fn(*args), range(calls)))


def test_serve_yaml_deploys_this_application() -> None:
    import importlib

    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "deploy" / "ray" / "serve.yaml").read_text()))
    [application] = config.applications
    module, _, name = application.import_path.partition(":")
    assert isinstance(getattr(importlib.import_module(module), name), serve.Application)
    deployments = {d.name: d for d in application.deployments}
    assert set(deployments) == {"Ingress", "Model"}
    model = deployments["Model"]
    assert model.ray_actor_options.num_gpus == 1 and model.health_check_period_s > 0
    assert model.max_ongoing_requests >= int(application.runtime_env["env_vars"]["ADAIN_BATCH_SIZE"])
    assert {"min_replicas", "max_replicas", "target_ongoing_requests"} <= set(model.autoscaling_config)


def test_what_a_model_replica_returns_survives_pickling() -> None:
    """Outcomes cross from the model replica to the ingress by pickle: results, and errors with their fields."""
    for error in (OutOfDeviceMemory("cuda:0", 4096), WorkerFailed("gone"), InputError("bad mask")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error) and vars(back) == vars(error)


def test_requests_spread_over_both_model_replicas_and_equal_the_library(server: str, weight_files: dict,
                                                                        content: bytes, style: bytes) -> None:
    responses = in_parallel(12, stylize, server, content, style)
    assert [r.status_code for r in responses] == [200] * 12, responses[0].text
    assert len({r.headers[MODEL_HEADER] for r in responses}) == 2
    assert all(len(r.headers.get_list("x-request-id")) == 1 and "model;dur=" in r.headers["server-timing"]
               for r in responses)
    w = weight_files["vgg16"]
    st = Stylizer.from_files(w["encoder_st"], w["decoder_st"], device="cpu", precision="auto")  # the service's default
    want = to_uint8(st.stylize(read_resized(content, SIZE).image, [read_resized(style, SIZE).image],
                               content_size=SIZE, style_size=SIZE))
    for r in responses:
        assert_batched_equal(pixels(r.content), want.permute(1, 2, 0).numpy())  # Serve batches them
    unknown = stylize(server, content, style_id="0123456789abcdef")
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_style"
    metrics = httpx.get(f"{server}/metrics").text
    assert 'adain_http_requests_total{method="POST",route="/v1/stylize",status="200"}' in metrics


def test_a_style_stored_through_one_replica_is_used_through_the_other(server: str, content: bytes,
                                                                      style: bytes) -> None:
    created = httpx.post(f"{server}/v1/styles", files={"image": ("starry.jpg", style, "image/jpeg")}, timeout=60)
    assert created.status_code == 201, created.text
    style_id = created.json()["id"]
    stored_by = (created.headers[INGRESS_HEADER], created.headers[MODEL_HEADER])
    uploaded = pixels(stylize(server, content, style).content)
    seen: set[tuple[str, str]] = set()
    for _ in range(5):
        responses = in_parallel(8, stylize, server, content, None, style_id)
        for r in responses:
            assert r.status_code == 200, r.text
            assert_batched_equal(pixels(r.content), uploaded)  # the stored statistics, encoded once
            seen.add((r.headers[INGRESS_HEADER], r.headers[MODEL_HEADER]))
        if any(i != stored_by[0] for i, _ in seen) and any(m != stored_by[1] for _, m in seen):
            break
    assert any(i != stored_by[0] for i, _ in seen) and any(m != stored_by[1] for _, m in seen), (stored_by, seen)
    listed = in_parallel(8, lambda: httpx.get(f"{server}/v1/styles", timeout=30))
    assert len({r.headers[INGRESS_HEADER] for r in listed}) == 2
    assert all([s["id"] for s in r.json()["styles"]] == [style_id] for r in listed)


def test_a_model_replica_killed_under_load_leaves_the_rest_answering(server: str, content: bytes,
                                                                     style: bytes) -> None:
    first = stylize(server, content, style)
    victim = first.headers[MODEL_HEADER]
    [actor] = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(victim)]
    with ThreadPoolExecutor(6) as pool:
        load = [pool.submit(stylize, server, content, style) for _ in range(24)]
        while sum(f.done() for f in load) < 4:
            time.sleep(0.01)
        ray.kill(ray.get_actor(actor, namespace="serve"), no_restart=True)
        during = [f.result() for f in load]
    codes = [r.status_code for r in during]
    assert set(codes) <= {200, 503} and codes.count(200) >= 20, codes  # a lost call is retried on the other
    for r in during:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "worker_failed" and r.headers["retry-after"]
    after = in_parallel(6, stylize, server, content, style)
    assert [r.status_code for r in after] == [200] * 6
    assert victim not in {r.headers[MODEL_HEADER] for r in after}
