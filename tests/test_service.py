"""examples/service.py: the standard-library HTTP service over Guard.screen_bytes, on 127.0.0.1 and a free port."""

from __future__ import annotations

import http.client
import importlib.util
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _service_module():
    spec = importlib.util.spec_from_file_location("edgeguard_example_service", EXAMPLES / "service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(guard):
    service = _service_module()
    srv = service.make_server(guard, "127.0.0.1", 0, max_bytes=64 * 1024)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def request(server, method: str, path: str, body: bytes | None = None, headers=None):
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["digit_7.png", "photo_digit_3.jpg", "adversarial_from_9.png",
                                  "not_a_digit_boot.png"])
def test_posted_bytes_get_the_verdict_screen_bytes_gives(server, guard, name):
    data = (EXAMPLES / name).read_bytes()
    status, body = request(server, "POST", f"/screen?source={name}", data)
    assert status == 200, body
    assert body == json.loads(json.dumps(guard.screen_bytes(data, source=name).to_dict()))
    assert body["source"] == name and body["bundle_id"] == guard.bundle_id


def test_flagged_and_clean_uploads_are_told_apart(server):
    _, clean = request(server, "POST", "/screen", (EXAMPLES / "digit_7.png").read_bytes())
    _, odd = request(server, "POST", "/screen", (EXAMPLES / "not_a_digit_boot.png").read_bytes())
    assert (clean["verdict"], clean["label"], clean["source"]) == ("clean", 7, None)
    assert odd["flagged"] is True and odd["reasons"]


@pytest.mark.parametrize("body, fragment", [
    (b"", "empty input"),
    (b"<html>not an image</html>", "not a supported image file"),
    ((EXAMPLES / "digit_7.png").read_bytes()[:60], "truncated or corrupt PNG"),
    (b"GIF89a" + bytes(30), "GIF is not supported"),
])
def test_unreadable_uploads_are_400_with_the_one_line_error(server, guard, body, fragment):
    status, answer = request(server, "POST", "/screen?source=upload-9", body)
    assert status == 400 and set(answer) == {"error"}
    assert fragment in answer["error"] and answer["error"].startswith("upload-9: ") and "\n" not in answer["error"]


def test_limits_and_other_paths(server, guard):
    status, answer = request(server, "POST", "/screen", bytes(64 * 1024 + 1))
    assert status == 413 and "too large" in answer["error"]
    assert request(server, "GET", "/screen")[0] == 404
    assert request(server, "POST", "/elsewhere", b"x")[0] == 404
    status, answer = request(server, "GET", "/health")
    assert status == 200 and answer["bundle_id"] == guard.bundle_id and answer["bundle"] == guard.bundle.info.name
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as raw:  # no Content-Length
        raw.sendall(b"POST /screen HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = raw.makefile("rb").readline()
    assert b" 411 " in reply


def test_concurrent_uploads_get_the_serial_answers(server):
    names = ["digit_0.png", "digit_1.png", "digit_2.png", "digit_4.png", "digit_7.png", "not_a_digit_boot.png"] * 3
    serial = [request(server, "POST", "/screen", (EXAMPLES / n).read_bytes())[1] for n in names]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(lambda n: request(server, "POST", "/screen", (EXAMPLES / n).read_bytes())[1], names))
    assert parallel == serial


def test_the_script_serves_on_the_port_it_reports():
    """`python examples/service.py --port 0` as a user runs it: it says where it listens, and answers there."""
    import re
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "service.py"), "--port", "0", "--providers", "cpu"],
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # ends (and the test fails) if the process dies first
            found = re.search(r"screening on http://127\.0\.0\.1:(\d+)/screen \(bundle (\w+)\)", line)
            if found:
                break
        else:
            pytest.fail(f"the service exited with {proc.wait()} before it listened")
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=60)
        conn.request("POST", "/screen", body=(EXAMPLES / "digit_7.png").read_bytes())
        answer = json.loads(conn.getresponse().read())
        conn.close()
        assert answer["label"] == 7 and answer["bundle_id"] == found.group(2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
