"""Building the predictor: checkpoints that load, that don't, and the download."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading

import pytest
import torch
from helpers import ROOT

from labeler.models.sam2 import build as model_module
from labeler.models.sam2.build import (
    ModelError,
    build_predictor,
    check_checkpoint,
    check_checkpoint_file,
    download_checkpoint,
    resolve_device,
)


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


def _truncated_checkpoint(path):
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])  # a zip checkpoint cut short, as by a failed copy


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_text("model: tiny\n"), "not a PyTorch checkpoint: .*bad.pt"),
        (lambda p: p.write_bytes(b"\x00garbage" * 10), "not a PyTorch checkpoint: .*bad.pt"),
        (_truncated_checkpoint, "bad.pt: cannot be read"),
        (lambda p: p.write_bytes(b"\x80\x02garbage" * 10), "bad.pt: cannot be read \\(UnpicklingError"),
        (lambda p: torch.save({"weights": {}}, p), "no 'model' state dict"),
    ],
    ids=["text", "random bytes", "damaged zip", "damaged pickle", "no model"],
)
def test_corrupt_checkpoint_is_refused(tmp_path, write, message):
    path = tmp_path / "bad.pt"
    write(path)
    with pytest.raises(ModelError, match=message) as refused:
        build_predictor("tiny", checkpoint=path, image_size=128)
    assert "\n" not in str(refused.value)  # one line, without torch's weights_only advice


def test_a_file_that_is_no_checkpoint_is_refused_before_any_model_is_built(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not weights\n")
    with pytest.raises(ModelError, match=r"^not a PyTorch checkpoint: .*notes.txt \(neither a zip archive nor a pickle"):
        check_checkpoint("tiny", path)
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="not a PyTorch checkpoint: .*an empty file"):
        check_checkpoint_file(path)


def test_model_module_imports_without_torch():
    # The command line answers argument errors without paying for torch's import (3 s).
    code = "import labeler.models.sam2.build, sys; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


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
    command = "python main.py --headless --prompts assets/demo/prompts.json --checkpoint none --image-size 256"
    with pytest.raises(ModelError, match=r"could not download(.|\n)*" + re.escape(command)):
        download_checkpoint("tiny", tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []
