"""Downloads against a local HTTP server: exact bytes, resumption, retries, checksums, the weight cache.

Nothing here reaches beyond 127.0.0.1: every test runs with ``MMDSTYLE_HOME`` in a temporary folder,
proxies bypassed, and the weight sources pointed at a closed local port unless a test serves them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib
import re
import socket
import sys
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from mmdstyle import cli
from mmdstyle.features import (
    VGG19,
    VGG19_CONVOLUTIONS,
    CheckpointError,
    ChecksumError,
    DownloadError,
    MultiScaleRandom,
    WeightsNotFoundError,
    cache_directory,
    convert_to_features_safetensors,
    converted_weights_path,
    default_extractor,
    download_file,
    download_weights,
    get_extractor,
    pretrained,
    pretrained_vgg19,
    resolve_extractor,
    sha256_of,
)
from mmdstyle.features.vgg import TORCHVISION_INDEX
from tests import torch_format

PAYLOAD_BYTES = 300 * 1024
TINY_WIDTHS = ((4, 4), (8, 8), (8, 8, 8, 8), (8, 8, 8, 8), (8, 8, 8, 8))
# mmdstyle.features.download is the function (the package re-exports it over the submodule's name)
download_module = importlib.import_module("mmdstyle.features.download")
REAL_TORCHVISION_SHA256 = "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44"


# --- a local HTTP server -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SeenRequest:
    path: str
    headers: dict[str, str]  # names lower-cased


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    file_server: FileServer

    def handle_error(self, request, client_address) -> None:  # keep tracebacks out of captured stderr
        self.file_server.errors.append(sys.exc_info()[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.file_server
        with state.lock:
            state.requests.append(SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()}))
            number = len(state.requests)
        if state.status is not None:
            self.send_error(state.status)
            return
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        requested = self.headers.get("Range")
        if requested is not None and state.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", requested)
            assert match is not None, requested
            start = int(match[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            if state.misreport_range:  # a broken proxy: says 206 but sends the whole body from byte 0
                start = 0
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if state.cut_after is not None and number <= state.cut_requests:
            # announce the whole length, send only the first bytes, then hang up
            self.wfile.write(payload[: state.cut_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_WR)
            return
        self.wfile.write(payload)


class FileServer:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 and records every request it sees.

    ``honour_range``: answer ``Range: bytes=N-`` with 206 (416 past the end), else 200 and the whole
    body. ``cut_after``/``cut_requests``: on the first ``cut_requests`` requests, send ``cut_after``
    bytes of the body and close the connection. ``status``: answer every request with that error.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.misreport_range = False
        self.cut_after: int | None = None
        self.cut_requests = 0
        self.status: int | None = None
        self.requests: list[SeenRequest] = []
        self.errors: list[BaseException | None] = []
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.file_server = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def serve(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.url(path)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server():
    file_server = FileServer()
    yield file_server
    file_server.close()


def closed_port_url(path: str = "/missing") -> str:
    """A URL on a local port nobody listens on: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class _Clock:
    """Stands in for the ``time`` module inside download.py: records the back-off sleeps, waits none."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """A private cache, no proxies, no back-off waits, and weight sources that can only fail locally."""
    monkeypatch.setenv("MMDSTYLE_HOME", str(tmp_path / "cache"))
    for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setattr(download_module, "time", _Clock())
    use_sources(
        monkeypatch,
        dataclasses.replace(pretrained.TORCHVISION, url=closed_port_url("/vgg19.pth")),
        dataclasses.replace(pretrained.TIMM, url=closed_port_url("/model.safetensors")),
    )


@pytest.fixture
def sleeps() -> list[float]:
    return download_module.time.sleeps


def use_sources(monkeypatch, *sources: pretrained.WeightSource) -> None:
    monkeypatch.setattr(pretrained, "SOURCES", {source.name: source for source in sources})


@pytest.fixture
def payload(rng) -> bytes:
    return rng.bytes(PAYLOAD_BYTES)


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def part_of(path):
    return path.with_name(path.name + ".part")


# --- download_file() --------------------------------------------------------------------------------


def test_download_fetches_the_exact_bytes_and_leaves_no_part_file(server, payload, tmp_path):
    url = server.serve("/payload.bin", payload)
    destination = tmp_path / "nested" / "payload.bin"
    result = download_file(url, destination, sha256_of_bytes(payload), progress=False)
    assert result == destination
    assert destination.read_bytes() == payload
    assert not part_of(destination).exists()
    assert len(server.requests) == 1
    assert "range" not in server.requests[0].headers


def test_progress_bar_names_the_file_on_stderr(server, payload, tmp_path, capsys):
    url = server.serve("/payload.bin", payload)
    download_file(url, tmp_path / "payload.bin", sha256_of_bytes(payload), progress=True)
    assert "payload.bin" in capsys.readouterr().err


def test_no_progress_bar_writes_nothing(server, payload, tmp_path, capsys):
    url = server.serve("/payload.bin", payload)
    download_file(url, tmp_path / "payload.bin", sha256_of_bytes(payload), progress=False)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_wrong_checksum_raises_and_keeps_neither_file(server, payload, tmp_path):
    url = server.serve("/payload.bin", payload)
    destination = tmp_path / "payload.bin"
    expected = "AB" * 32  # upper case on purpose: the message gives it lower-cased
    with pytest.raises(ChecksumError) as raised:
        download_file(url, destination, expected, progress=False)
    message = str(raised.value)
    assert str(part_of(destination)) in message or str(destination) in message
    assert expected.lower() in message
    assert sha256_of_bytes(payload) in message
    assert not destination.exists()
    assert not part_of(destination).exists()


def test_interrupted_transfer_keeps_the_part_file_and_the_next_call_resumes_it(server, payload, tmp_path):
    kept = 100_000
    url = server.serve("/payload.bin", payload)
    server.cut_after, server.cut_requests = kept, 1
    destination = tmp_path / "payload.bin"
    with pytest.raises(DownloadError, match="attempt") as raised:
        download_file(url, destination, sha256_of_bytes(payload), progress=False, attempts=1)
    assert str(part_of(destination)) in str(raised.value)
    assert not destination.exists()
    assert part_of(destination).read_bytes() == payload[:kept]

    download_file(url, destination, sha256_of_bytes(payload), progress=False)
    assert server.requests[-1].headers.get("range") == f"bytes={kept}-"
    assert destination.read_bytes() == payload
    assert not part_of(destination).exists()


def test_retries_resume_an_interrupted_transfer_within_one_call(server, payload, tmp_path, sleeps):
    kept = 123_457
    url = server.serve("/payload.bin", payload)
    server.cut_after, server.cut_requests = kept, 1
    destination = tmp_path / "payload.bin"
    download_file(url, destination, sha256_of_bytes(payload), progress=False, attempts=3)
    assert destination.read_bytes() == payload
    assert [request.headers.get("range") for request in server.requests] == [None, f"bytes={kept}-"]
    assert len(sleeps) == 1


def test_server_ignoring_range_restarts_instead_of_appending(server, payload, tmp_path):
    kept = 50_000
    url = server.serve("/payload.bin", payload)
    server.cut_after, server.cut_requests = kept, 1
    server.honour_range = False
    destination = tmp_path / "payload.bin"
    download_file(url, destination, sha256_of_bytes(payload), progress=False, attempts=2)
    assert server.requests[-1].headers.get("range") == f"bytes={kept}-"  # asked to resume, got 200
    assert destination.read_bytes() == payload


def test_complete_part_file_is_checked_and_renamed_when_the_server_answers_416(server, payload, tmp_path):
    url = server.serve("/payload.bin", payload)
    destination = tmp_path / "payload.bin"
    part_of(destination).write_bytes(payload)
    download_file(url, destination, sha256_of_bytes(payload), progress=False)
    assert [request.headers.get("range") for request in server.requests] == [f"bytes={len(payload)}-"]
    assert destination.read_bytes() == payload
    assert not part_of(destination).exists()


def test_not_found_fails_at_once_without_retrying(server, tmp_path):
    destination = tmp_path / "payload.bin"
    with pytest.raises(DownloadError, match="404"):
        download_file(server.url("/nothing-here"), destination, "0" * 64, progress=False, attempts=4)
    assert len(server.requests) == 1
    assert not destination.exists()
    assert not part_of(destination).exists()


def test_service_unavailable_is_retried_up_to_the_attempts(server, payload, tmp_path, sleeps):
    url = server.serve("/payload.bin", payload)
    server.status = 503
    with pytest.raises(DownloadError, match="503"):
        download_file(url, tmp_path / "payload.bin", sha256_of_bytes(payload), progress=False, attempts=2)
    assert len(server.requests) == 2
    assert len(sleeps) == 1


def test_connection_refused_raises_download_error_and_writes_nothing(tmp_path):
    destination = tmp_path / "payload.bin"
    with pytest.raises(DownloadError, match="after 4 attempts"):
        download_file(closed_port_url(), destination, "0" * 64, progress=False)
    assert not destination.exists()
    assert not part_of(destination).exists()


# --- the cache -----------------------------------------------------------------------------------


def test_cache_directory_is_mmdstyle_home_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MMDSTYLE_HOME", str(tmp_path / "home"))
    assert cache_directory() == tmp_path / "home"
    assert converted_weights_path().parent == tmp_path / "home" / "weights"


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_CACHE_HOME is the Linux convention")
def test_cache_directory_follows_xdg_cache_home_without_mmdstyle_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MMDSTYLE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_directory() == tmp_path / "xdg" / "mmdstyle"
    assert converted_weights_path().parent == tmp_path / "xdg" / "mmdstyle" / "weights"


# --- pretrained weights end to end ----------------------------------------------------------------


def tiny_vgg_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """torchvision-named VGG-19 convolutions of narrow widths, plus a classifier weight to be ignored."""
    channels = [3] + [width for block in TINY_WIDTHS for width in block]
    state = {}
    for name, inputs, outputs in zip(VGG19_CONVOLUTIONS, channels[:-1], channels[1:], strict=True):
        stem = f"features.{TORCHVISION_INDEX[name]}"
        state[f"{stem}.weight"] = rng.normal(size=(outputs, inputs, 3, 3)).astype(np.float32)
        state[f"{stem}.bias"] = rng.normal(size=outputs).astype(np.float32)
    state["classifier.0.weight"] = rng.normal(size=(5, 8)).astype(np.float32)
    return state


def torchvision_file(state, tmp_path) -> bytes:
    path = tmp_path / "written.pth"
    torch_format.save_legacy(path, state)
    return path.read_bytes()


def timm_file(state, tmp_path) -> bytes:
    path = tmp_path / "written.safetensors"
    save_file({**state, "pre_logits.fc1.weight": np.ones((6, 8, 7, 7), np.float32)}, str(path))
    return path.read_bytes()


def serve_torchvision(server, monkeypatch, state, tmp_path) -> pretrained.WeightSource:
    body = torchvision_file(state, tmp_path)
    source = dataclasses.replace(
        pretrained.TORCHVISION, url=server.serve("/vgg19.pth", body), sha256=sha256_of_bytes(body)
    )
    use_sources(monkeypatch, source, dataclasses.replace(pretrained.TIMM, url=server.url("/absent")))
    return source


@pytest.fixture
def converted_cache(rng, tmp_path):
    """The cache as a successful download leaves it, made with the public converter (no download)."""
    state = tiny_vgg_state(rng)
    original = tmp_path / "original.pth"
    torch_format.save_legacy(original, state)
    convert_to_features_safetensors(original, converted_weights_path(), preprocessing="torchvision")
    return state


def assert_loads_the_state(model, state) -> None:
    assert isinstance(model, VGG19)
    for i, name in enumerate(VGG19_CONVOLUTIONS):
        stem = f"features.{TORCHVISION_INDEX[name]}"
        kernel = np.asarray(model.convolutions[i].kernel[...])
        bias = np.asarray(model.convolutions[i].bias[...])
        np.testing.assert_array_equal(kernel, state[f"{stem}.weight"].transpose(2, 3, 1, 0), err_msg=name)
        np.testing.assert_array_equal(bias, state[f"{stem}.bias"], err_msg=name)


def test_download_weights_converts_torchvision_and_loads_exactly(server, rng, tmp_path, monkeypatch):
    state = tiny_vgg_state(rng)
    source = serve_torchvision(server, monkeypatch, state, tmp_path)
    path = download_weights(progress=False)
    assert path == converted_weights_path()
    assert path.is_file()
    assert path.with_name(path.name + ".sha256").read_text().split()[0] == sha256_of(path)
    assert not (path.parent / source.filename).exists()  # keep_original=False
    assert not part_of(path.parent / source.filename).exists()
    assert [request.path for request in server.requests] == ["/vgg19.pth"]
    assert_loads_the_state(pretrained_vgg19(download_if_missing=False), state)


def test_second_source_is_used_when_the_first_fails(server, rng, tmp_path, monkeypatch, capsys):
    state = tiny_vgg_state(rng)
    body = timm_file(state, tmp_path)
    use_sources(
        monkeypatch,
        dataclasses.replace(pretrained.TORCHVISION, url=server.url("/gone.pth")),
        dataclasses.replace(
            pretrained.TIMM, url=server.serve("/model.safetensors", body), sha256=sha256_of_bytes(body)
        ),
    )
    assert download_weights(progress=False) == converted_weights_path()
    assert [request.path for request in server.requests] == ["/gone.pth", "/model.safetensors"]
    assert_loads_the_state(pretrained_vgg19(download_if_missing=False), state)
    assert cli.main(["weights", "info"]) == 0
    assert "/model.safetensors" in capsys.readouterr().out  # the converted file records its source


def test_a_file_copied_into_the_cache_by_hand_is_converted_without_any_request(
    server, rng, tmp_path, monkeypatch
):
    state = tiny_vgg_state(rng)
    source = serve_torchvision(server, monkeypatch, state, tmp_path)
    server.files.clear()
    placed = converted_weights_path().parent / source.filename
    placed.parent.mkdir(parents=True)
    placed.write_bytes(torchvision_file(state, tmp_path))
    assert download_weights(progress=False) == converted_weights_path()
    assert server.requests == []
    assert placed.is_file()  # the user's own copy is never deleted
    assert_loads_the_state(pretrained_vgg19(download_if_missing=False), state)


def test_intact_converted_weights_are_not_fetched_again(server, rng, tmp_path, monkeypatch):
    state = tiny_vgg_state(rng)
    serve_torchvision(server, monkeypatch, state, tmp_path)
    download_weights(progress=False)
    download_weights(progress=False)
    assert len(server.requests) == 1
    download_weights(progress=False, force=True)
    assert len(server.requests) == 2


def test_a_bad_file_copied_by_hand_is_reported_and_the_next_source_tried(server, rng, tmp_path, monkeypatch):
    state = tiny_vgg_state(rng)
    body = timm_file(state, tmp_path)
    use_sources(
        monkeypatch,
        pretrained.TORCHVISION,
        dataclasses.replace(
            pretrained.TIMM, url=server.serve("/model.safetensors", body), sha256=sha256_of_bytes(body)
        ),
    )
    placed = converted_weights_path().parent / pretrained.TORCHVISION.filename
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"not the published file")
    assert download_weights(progress=False) == converted_weights_path()
    assert [request.path for request in server.requests] == ["/model.safetensors"]


def test_converter_writes_a_file_pretrained_vgg19_loads_exactly(converted_cache):
    path = converted_weights_path()
    assert path.with_name(path.name + ".sha256").read_text().split() == [sha256_of(path), path.name]
    assert_loads_the_state(pretrained_vgg19(download_if_missing=False), converted_cache)


def test_a_tampered_converted_file_is_refused_by_its_recorded_hash(converted_cache):
    path = converted_weights_path()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=re.escape(str(path))):
        pretrained_vgg19(download_if_missing=False)


def test_a_converted_file_without_its_hash_file_is_refused(converted_cache):
    path = converted_weights_path()
    path.with_name(path.name + ".sha256").unlink()
    with pytest.raises(CheckpointError, match="no recorded hash"):
        pretrained_vgg19(download_if_missing=False)


def test_offline_error_says_what_to_fetch_and_where_to_put_it():
    with pytest.raises(WeightsNotFoundError) as raised:
        download_weights(progress=False)
    message = str(raised.value)
    assert pretrained.TORCHVISION.sha256 == REAL_TORCHVISION_SHA256
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert REAL_TORCHVISION_SHA256 in message
    assert str(converted_weights_path().parent) in message
    assert not converted_weights_path().exists()


def test_offline_cli_download_exits_1_with_the_message_on_stderr(capsys):
    assert cli.main(["weights", "download", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("mmdstyle: could not download")
    assert pretrained.TORCHVISION.url in captured.err
    assert REAL_TORCHVISION_SHA256 in captured.err
    assert str(converted_weights_path().parent) in captured.err
    assert "VGG-19 weights ready" not in captured.out


# --- extractors by name ---------------------------------------------------------------------------

BY_FUNCTION_AND_BY_NAME = pytest.mark.parametrize(
    "make", [default_extractor, lambda: get_extractor("default")], ids=["function", "name"]
)


@BY_FUNCTION_AND_BY_NAME
def test_default_extractor_without_weights_is_the_random_network_announced_once(make, capsys):
    extractor = make()
    assert isinstance(extractor, MultiScaleRandom)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "random" in err
    assert "mmdstyle weights download" in err


def test_quiet_takes_the_random_network_without_a_word(capsys):
    assert isinstance(resolve_extractor(quiet=True), MultiScaleRandom)
    assert isinstance(default_extractor(announce=False), MultiScaleRandom)
    assert capsys.readouterr().err == ""
    resolve_extractor()
    assert "mmdstyle weights download" in capsys.readouterr().err


@BY_FUNCTION_AND_BY_NAME
def test_default_extractor_with_cached_weights_is_vgg19_silently(make, converted_cache, capsys):
    extractor = make()
    assert_loads_the_state(extractor, converted_cache)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_asking_for_vgg19_by_name_never_falls_back():
    with pytest.raises(WeightsNotFoundError):
        get_extractor("vgg19")
    assert not converted_weights_path().exists()


# --- the CLI ---------------------------------------------------------------------------------------


def test_weights_info_prints_the_cache_directory(capsys):
    assert cli.main(["weights", "info"]) == 0
    out = capsys.readouterr().out
    assert str(cache_directory()) in out
    assert "converted weights: none" in out


def test_a_partial_answer_from_another_offset_restarts_the_file(server, rng, tmp_path):
    payload = rng.bytes(50_000)
    url = server.serve("/payload.bin", payload)
    destination = tmp_path / "payload.bin"
    part_of(destination).write_bytes(payload[:1000])
    server.misreport_range = True
    download_file(url, destination, sha256_of_bytes(payload), progress=False)
    assert destination.read_bytes() == payload


def test_failures_with_progress_do_not_use_up_the_attempts(server, rng, tmp_path):
    payload = rng.bytes(60_000)
    url = server.serve("/payload.bin", payload)
    server.cut_after, server.cut_requests = 10_000, 4  # four interrupted transfers, each with progress
    destination = tmp_path / "payload.bin"
    download_file(url, destination, sha256_of_bytes(payload), progress=False, attempts=2)
    assert destination.read_bytes() == payload
    assert len(server.requests) == 5


@pytest.mark.usefixtures("as_a_user")
def test_a_malformed_hash_is_refused_before_downloading(server, tmp_path):
    url = server.serve("/payload.bin", b"x")
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        download_file(url, tmp_path / "payload.bin", "dcbb9e9d", progress=False)
    assert server.requests == []


def test_weights_info_reports_a_damaged_cache_instead_of_failing(converted_cache, capsys):
    path = converted_weights_path()
    path.write_bytes(path.read_bytes()[:-10])
    assert cli.main(["weights", "info"]) == 0
    assert "unusable" in capsys.readouterr().out
