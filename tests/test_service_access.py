"""Access control and abuse limits against `adain serve` on 127.0.0.1: API keys and roles, styles owned by keys,
quotas, rate limits, CORS and cross-origin writes, security headers, /docs and /metrics off, slow clients."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from .service_fixtures import free_port, make_key, metric, serve


def error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["request_id"] == response.headers["x-request-id"]
    return body


def test_api_keys_roles_ownership_quotas_and_rate_limits(tmp_path: Path, weight_files: dict,
                                                         content_paths: list[Path], style_paths: list[Path]) -> None:
    keys = {name: make_key(name, role) for name, role in
            (("alice", "write"), ("bob", "write"), ("reader", "read"), ("boss", "admin"))}
    key_file = tmp_path / "keys"
    key_file.write_text("# name role sha256\n" + "\n".join(line for _, line in keys.values()) + "\n")
    assert all(key not in key_file.read_text() for key, _ in keys.values())  # only hashes are stored
    style = ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")
    content = ("c.jpg", content_paths[0].read_bytes(), "image/jpeg")
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", "--api-keys", str(key_file),
               "--max-stored-styles", "2", "--rate-limit", "20") as server:

        def client(name: str | None) -> httpx.Client:
            headers = {"Authorization": f"Bearer {keys[name][0]}"} if name else {}
            return httpx.Client(base_url=server.url, headers=headers, timeout=60)

        alice, bob, reader, boss, nobody = (client(n) for n in ("alice", "bob", "reader", "boss", None))
        for r in (nobody.get("/v1/styles"), nobody.post("/v1/styles", files={"image": style}),
                  httpx.get(f"{server.url}/v1/styles", headers={"Authorization": "Bearer adain_wrong"})):
            error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert nobody.get("/healthz").status_code == 200 and nobody.get("/readyz").status_code == 200

        mine = alice.post("/v1/styles", files={"image": style}).json()["id"]
        error(reader.post("/v1/styles", files={"image": style}), 403, "forbidden")
        assert bob.get("/v1/styles").json()["styles"] == []
        for r in (bob.get(f"/v1/styles/{mine}"), bob.get(f"/v1/styles/{mine}/thumbnail"),
                  bob.delete(f"/v1/styles/{mine}")):
            error(r, 404, "not_found")
        error(bob.post("/v1/stylize", files={"content": content}, data={"style_id": mine}), 422, "unknown_style")
        assert alice.post("/v1/stylize", files={"content": content}, data={"style_id": mine}).status_code == 200

        error(alice.patch(f"/v1/styles/{mine}", json={"public": True}), 403, "forbidden")
        assert boss.patch(f"/v1/styles/{mine}", json={"public": True}).json()["public"] is True
        assert [s["id"] for s in bob.get("/v1/styles").json()["styles"]] == [mine]  # public: seen, usable
        assert bob.post("/v1/stylize", files={"content": content}, data={"style_id": mine}).status_code == 200
        error(bob.delete(f"/v1/styles/{mine}"), 404, "not_found")  # but not his to delete

        assert alice.post("/v1/styles", files={"image": style}).status_code == 201
        error(alice.post("/v1/styles", files={"image": style}), 429, "quota_exceeded")  # 2 styles per key
        theirs = bob.post("/v1/styles", files={"image": style}).json()["id"]
        assert len(boss.get("/v1/styles").json()["styles"]) == 3
        assert boss.delete(f"/v1/styles/{theirs}").status_code == 204  # admin: any style

        limited = [reader.get("/v1/styles") for _ in range(25)]  # 20 per minute per key
        assert [r.status_code for r in limited].count(429) >= 5
        body = error(limited[-1], 429, "rate_limited")
        assert int(limited[-1].headers["retry-after"]) >= 1 and "retry" in body["message"]
        assert boss.get("/v1/styles").status_code == 200  # other keys have their own bucket


def slowloris(port: int, header: bytes) -> tuple[bytes, int]:
    """Send a request's line, then ``header`` one byte at a time, waiting 0.25 s for an answer before each;
    (what the server answered, header bytes sent before it answered or closed the connection)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
        conn.settimeout(0.25)
        sent = 0
        while sent < len(header):
            try:
                answer = conn.recv(4096)
                break  # the server answered, or closed the connection
            except TimeoutError:
                conn.sendall(header[sent:sent + 1])
                sent += 1
        else:
            answer = b""
        conn.settimeout(10)
        return answer + b"".join(iter(lambda: conn.recv(4096), b"")), sent


def test_cross_origin_writes_cors_headers_limits_and_slow_clients(tmp_path: Path, weight_files: dict,
                                                                  content_paths: list[Path],
                                                                  style_paths: list[Path]) -> None:
    style = {"image": ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")}
    content = {"content": ("c.jpg", content_paths[0].read_bytes(), "image/jpeg")}
    good = "https://good.example"
    with Image.open(style_paths[0]) as img:
        megapixels = img.width * img.height / 1e6  # what an upload of it costs
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", "--cors-origins", good,
               "--docs", "false", "--metrics", "false", "--megapixels-per-minute", f"{4.5 * megapixels:.6f}",
               "--body-timeout", "1", "--keep-alive-timeout", "1", "--header-timeout", "1") as server:
        c = httpx.Client(base_url=server.url, timeout=60)
        error(c.post("/v1/styles", files=style, headers={"Origin": "https://evil.example"}), 403, "cross_origin")
        error(c.post("/v1/styles", files=style, headers={"Origin": "null"}), 403, "cross_origin")
        assert c.get("/v1/styles").json()["styles"] == []  # nothing was stored
        ok = c.post("/v1/styles", files=style, headers={"Origin": good})
        assert ok.status_code == 201 and ok.headers["access-control-allow-origin"] == good
        assert c.post("/v1/styles", files=style, headers={"Origin": server.url}).status_code == 201  # the page
        preflight = c.options("/v1/stylize", headers={"Origin": good, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == good
        assert "access-control-allow-origin" not in c.get("/v1/styles", headers={"Origin": "https://evil.example"}
                                                          ).headers

        page = c.get("/")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        for r in (page, c.get("/v1/styles"), c.get("/nope")):
            assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer" and "content-security-policy" in r.headers
        for path in ("/docs", "/openapi.json", "/redoc", "/metrics"):
            error(c.get(path), 404, "not_found")

        stylized = c.post("/v1/stylize", files={**content, "style": style["image"]})  # the style, a small content
        assert stylized.status_code == 200
        uploads = [c.post("/v1/styles", files=style) for _ in range(2)]
        assert uploads[0].status_code == 201  # a little over 4 of 4.5 megapixels so far
        error(uploads[-1], 429, "rate_limited")
        assert int(uploads[-1].headers["retry-after"]) >= 1

        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /v1/styles HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: multipart/form-data; "
                         b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n" % port)
            t0 = time.monotonic()
            slow.settimeout(10)
            answer = b"".join(iter(lambda: slow.recv(4096), b""))  # until the server closes the connection
            assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer
            assert time.monotonic() - t0 < 5
        header = b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"  # at 4 bytes a second: close to a minute
        answer, sent = slowloris(port, header)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer, answer
        assert sent < len(header)  # cut off while still sending its headers
        with socket.create_connection(("127.0.0.1", port)) as silent:  # opened, and nothing sent
            silent.settimeout(10)
            assert silent.recv(4096) == b""  # closed by the server, without an answer
        with socket.create_connection(("127.0.0.1", port)) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
            idle.settimeout(10)
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += idle.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            t0 = time.monotonic()
            assert idle.recv(4096) == b""  # closed by the server after the keep-alive timeout
            assert time.monotonic() - t0 < 5


def test_operations_endpoints_move_to_the_admin_port(tmp_path: Path, weight_files: dict) -> None:
    admin_port = free_port()
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log",
               "--admin-port", str(admin_port)) as server:
        public, admin = httpx.Client(base_url=server.url), httpx.Client(base_url=f"http://127.0.0.1:{admin_port}")
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            error(public.get(path), 404, "not_found")
        assert public.get("/healthz").status_code == 200 and public.get("/v1/styles").status_code == 200
        text = admin.get("/metrics").text
        assert metric(text, "adain_http_requests_total", route="/v1/styles", status="200") == 1  # the public one's
        assert metric(text, "adain_ready") == 1
        schema = admin.get("/openapi.json").json()
        assert "/v1/stylize" in schema["paths"] and "/metrics" not in schema["paths"]  # the public API
        docs = admin.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        for path in ("/", "/v1/styles", "/healthz"):  # the admin port serves nothing else
            error(admin.get(path), 404, "not_found")
        server.process.terminate()
        assert server.process.wait(timeout=60) == 0
    for port in (int(server.url.rsplit(":", 1)[1]), admin_port):  # both closed
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_requests_naming_another_host_get_400_so_a_rebound_name_cannot_reach_the_api(
        tmp_path: Path, weight_files: dict, style_paths: list[Path]) -> None:
    style = {"image": ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")}
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log") as server:
        port = int(server.url.rsplit(":", 1)[1])
        c = httpx.Client(base_url=server.url, timeout=60)
        style_id = c.post("/v1/styles", files=style).json()["id"]
        evil = f"evil.test:{port}"  # a page of http://evil.test:PORT once evil.test resolves to 127.0.0.1
        deleted = c.delete(f"/v1/styles/{style_id}", headers={"Host": evil, "Origin": f"http://{evil}"})
        assert "evil.test" in error(deleted, 400, "invalid_host")["message"]
        for path in ("/v1/styles", f"/v1/styles/{style_id}/thumbnail", "/", "/healthz", "/metrics"):
            error(c.get(path, headers={"Host": evil}), 400, "invalid_host")
        error(c.get("/v1/styles", headers={"Host": f"localhost:{port + 1}"}), 400, "invalid_host")  # another port
        error(c.get("/v1/styles", headers={"Host": "local host"}), 400, "invalid_host")
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            assert c.get("/v1/styles", headers={"Host": host}).json()["styles"][0]["id"] == style_id, host
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log",
               "--allowed-hosts", "adain.example.org,other.example:9000") as server:
        c = httpx.Client(base_url=server.url, timeout=60)
        for host in ("adain.example.org", "adain.example.org:443", "other.example:9000", server.url[7:]):
            assert c.get("/v1/styles", headers={"Host": host}).status_code == 200, host
        for host in ("other.example", "evil.test"):
            error(c.get("/v1/styles", headers={"Host": host}), 400, "invalid_host")
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", "--allowed-hosts", "*") as s:
        assert httpx.get(f"{s.url}/v1/styles", headers={"Host": "anything.example"}).status_code == 200


def test_only_public_styles_seen_without_keys_are_publicly_cacheable(tmp_path: Path, weight_files: dict,
                                                                     style_paths: list[Path]) -> None:
    style = {"image": ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")}
    alice, line = make_key("alice", "admin")
    key_file = tmp_path / "keys"
    key_file.write_text(line + "\n")
    with serve(weight_files["vgg16"], tmp_path / "keyed.db", tmp_path / "server.log", "--api-keys",
               str(key_file)) as server:
        c = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {alice}"}, timeout=60)
        style_id = c.post("/v1/styles", files=style).json()["id"]
        for public in (False, True):  # answers to a key: never for a shared cache, even for a public style
            assert c.patch(f"/v1/styles/{style_id}", json={"public": public}).status_code == 200
            for path in (f"/v1/styles/{style_id}/thumbnail", f"/v1/styles/{style_id}", "/v1/styles"):
                r = c.get(path)
                assert r.status_code == 200 and "public" not in r.headers["cache-control"], (path, r.headers)
                assert {"private", "no-store"} & set(r.headers["cache-control"].replace(",", " ").split()), path
                assert "authorization" in r.headers["vary"].lower(), (path, r.headers)
        assert "max-age=31536000" in c.get(f"/v1/styles/{style_id}/thumbnail").headers["cache-control"]
    with serve(weight_files["vgg16"], tmp_path / "open.db", tmp_path / "server.log") as server:
        style_id = httpx.post(f"{server.url}/v1/styles", files=style, timeout=60).json()["id"]
        thumbnail = f"{server.url}/v1/styles/{style_id}/thumbnail"
        assert httpx.get(thumbnail).headers["cache-control"] == "private, max-age=31536000, immutable"
        httpx.patch(f"{server.url}/v1/styles/{style_id}", json={"public": True}).raise_for_status()
        assert httpx.get(thumbnail).headers["cache-control"] == "public, max-age=31536000, immutable"


def test_forwarded_addresses_count_only_from_the_proxies_named(tmp_path: Path, weight_files: dict,
                                                               style_paths: list[Path]) -> None:
    style = {"image": ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")}
    limits = ("--rate-limit", "10", "--max-stored-styles", "2")

    def from_addresses(c: httpx.Client, method: str, n: int, **kwargs: object) -> list[int]:
        """Statuses of ``n`` requests that each claim another client address."""
        return [c.request(method, "/v1/styles", headers={"X-Forwarded-For": f"203.0.113.{i}"}, **kwargs).status_code
                for i in range(n)]

    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", *limits) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        assert from_addresses(c, "POST", 3, files=style) == [201, 201, 429]  # one owner, 127.0.0.1: quota 2
        listed = from_addresses(c, "GET", 10)
        assert listed[:7] == [200] * 7 and set(listed[7:]) == {429}, listed  # one client: 10 a minute, 3 used
    with serve(weight_files["vgg16"], tmp_path / "proxied.db", tmp_path / "server.log", *limits,
               "--forwarded-allow-ips", "127.0.0.1") as server, httpx.Client(base_url=server.url, timeout=60) as c:
        assert from_addresses(c, "POST", 3, files=style) == [201] * 3  # behind a proxy: its clients, each its own
        assert from_addresses(c, "GET", 10) == [200] * 10


def test_a_client_at_its_quota_is_refused_before_its_style_is_encoded(tmp_path: Path, weight_files: dict,
                                                                      style_paths: list[Path]) -> None:
    style = {"image": ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")}
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", "--max-stored-styles", "1",
               "--max-stored-bytes", str(2 * len(style["image"][1]))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.post("/v1/styles", files=style).status_code == 201
        runs = metric(c.get("/metrics").text, "adain_batch_size_count")
        assert "stores 1 styles" in error(c.post("/v1/styles", files=style), 429, "quota_exceeded")["message"]
        assert metric(c.get("/metrics").text, "adain_batch_size_count") == runs  # nothing was encoded for it
        c.delete(f"/v1/styles/{c.get('/v1/styles').json()['styles'][0]['id']}").raise_for_status()
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buf, "PNG")
        big = {"image": ("big.png", buf.getvalue(), "image/png")}  # more bytes than the quota
        assert "bytes" in error(c.post("/v1/styles", files=big), 429, "quota_exceeded")["message"]
        assert metric(c.get("/metrics").text, "adain_batch_size_count") == runs


def early_answer(port: int, request: bytes) -> tuple[bytes, float]:
    """Send only a request's line and headers (they promise a body that never comes); (what the server answered
    before closing the connection, seconds it took)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        t0 = time.monotonic()
        conn.sendall(request)
        conn.settimeout(10)
        answer = b"".join(iter(lambda: conn.recv(4096), b""))  # until the server closes the connection
    return answer, time.monotonic() - t0


def test_keys_roles_quotas_and_rates_are_checked_from_the_headers_before_the_body(
        tmp_path: Path, weight_files: dict, style_paths: list[Path]) -> None:
    keys = {name: make_key(name, role) for name, role in (("writer", "write"), ("reader", "read"))}
    key_file = tmp_path / "keys"
    key_file.write_text("\n".join(line for _, line in keys.values()) + "\n")
    with serve(weight_files["vgg16"], tmp_path / "styles.db", tmp_path / "server.log", "--api-keys", str(key_file),
               "--max-stored-styles", "1", "--rate-limit", "6") as server:
        port = int(server.url.rsplit(":", 1)[1])
        writer = {"Authorization": f"Bearer {keys['writer'][0]}"}
        assert httpx.post(f"{server.url}/v1/styles", headers=writer, timeout=60,
                          files={"image": ("s.jpg", style_paths[0].read_bytes(), "image/jpeg")}).status_code == 201

        def post(path: str, key: str | None) -> tuple[bytes, float]:
            auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
            return early_answer(port, b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sContent-Type: multipart/form-data; "
                                b"boundary=b\r\nContent-Length: 40000000\r\n\r\n" % (path.encode(), port, auth))

        for path, key, status, code in [("/v1/stylize", None, 401, b"unauthorized"),
                                         ("/v1/styles", keys["reader"][0], 403, b"forbidden"),
                                         ("/v1/styles", keys["writer"][0], 429, b"quota_exceeded")]:
            answer, seconds = post(path, key)
            assert answer.startswith(b"HTTP/1.1 %d" % status) and code in answer, answer
            assert b"connection: close" in answer.lower() and seconds < 5, (answer, seconds)
        wrong = [httpx.get(f"{server.url}/v1/styles", headers={"Authorization": "Bearer adain_wrong"}).status_code
                 for _ in range(8)]
        assert wrong[:4] == [401] * 4 and 429 in wrong, wrong  # bad keys count against their address's rate
