"""Building the predictor: checkpoints that load, that don't, and the download."""

from __future__ import annotations

import http.server
import threading

import pytest
import torch

from labeler import model as model_module
from labeler.model import ModelError, build_predictor, download_checkpoint, resolve_device


def test_checkpoint_weights_are_loaded(test_checkpoint):
    saved = torch.load(test_checkpoint, weights_only=True)["model"]
    predictor = build_predictor("tiny", checkpoint=test_checkpoint, image_size=256)
    key = "memory_encoder.mask_downsampler.encoder.12.weight"
    assert torch.equal(predictor.state_dict()[key], saved[key])


def test_untrained_weights_are_reproducible():
    a = build_predictor("tiny", checkpoint="none", image_size=128).state_dict()
    b = build_predictor("tiny", checkpoint="none", image_size=128).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "small.pt"
    small = build_predictor("small", checkpoint="none", image_size=128)
    torch.save({"model": small.state_dict()}, path)
    with pytest.raises(ModelError, match="does not match the chosen --model config.*(missing keys|unexpected keys|shape mismatches)"):
        build_predictor("tiny", checkpoint=path, image_size=128)


@pytest.mark.parametrize("content, message", [(b"\x00garbage" * 10, "cannot be read"), (None, "no 'model' state dict")])
def test_corrupt_checkpoint_is_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        build_predictor("tiny", checkpoint=path, image_size=128)


def test_missing_checkpoint_names_the_download_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="python main.py download --model large"):
        build_predictor("large")


@pytest.mark.parametrize("size", [100, 250])
def test_image_size_must_suit_the_backbone(size):
    with pytest.raises(ModelError, match="multiple of 32"):
        build_predictor("tiny", checkpoint="none", image_size=size)


def test_auto_device_falls_back_to_cpu_and_unknown_devices_are_refused():
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ModelError, match="not available"):
            resolve_device("cuda")


class _Server:
    """A loopback HTTP server that serves `body`, announcing `length` bytes."""

    def __init__(self, body: bytes, length: int):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        outer.httpd = self.httpd

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_saves_the_whole_file(tmp_path, monkeypatch):
    body = bytes(range(256)) * 4096
    server = _Server(body, len(body))
    monkeypatch.setattr(model_module, "DOWNLOAD_BASE", server.url)
    try:
        path = download_checkpoint("tiny", tmp_path / "ck" / "sam2.1_hiera_tiny.pt")
    finally:
        server.close()
    assert path.read_bytes() == body
    assert [p.name for p in path.parent.iterdir()] == ["sam2.1_hiera_tiny.pt"]


def test_truncated_download_leaves_nothing(tmp_path, monkeypatch):
    server = _Server(b"x" * 1000, 5000)
    monkeypatch.setattr(model_module, "DOWNLOAD_BASE", server.url)
    dest = tmp_path / "sam2.1_hiera_tiny.pt"
    try:
        with pytest.raises(ModelError):
            download_checkpoint("tiny", dest)
    finally:
        server.close()
    assert list(tmp_path.iterdir()) == []


def test_download_without_network_shows_the_untrained_run(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module, "DOWNLOAD_BASE", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.raises(ModelError, match=r"could not download(.|\n)*--checkpoint none"):
        download_checkpoint("tiny", tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []
