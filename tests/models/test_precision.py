"""`--precision`: what auto resolves to on each device and CPU, one place (`models.common.resolve_precision`);
the backend applies it, and its feature-cache key keeps the names it had before the option."""

from __future__ import annotations

import builtins
import io
import os
import types

import pytest
import torch

from labeler.errors import UsageError
from labeler.models.common import cpu_has_native_bf16, resolve_precision


def _capabilities(monkeypatch, **flags):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", **flags}, raising=False)


@pytest.mark.parametrize("flags, native", [
    ({}, False),
    ({"avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, False),  # AVX-512 alone emulates
    ({"avx512_bf16": True}, True),
    ({"amx_bf16": True, "amx_tile": True}, True),
])
def test_native_bf16_is_read_from_torchs_cpu_capabilities(monkeypatch, flags, native):
    _capabilities(monkeypatch, **flags)
    assert cpu_has_native_bf16() is native
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")


@pytest.mark.parametrize("flags, native", [
    ("fpu vme avx2 avx512f avx512bw", False),
    ("fpu avx2 avx512f avx512_bf16", True),
    ("fpu avx2 amx_bf16 amx_tile amx_int8", True),
])
def test_without_torchs_query_the_kernels_cpu_flags_are_read(monkeypatch, flags, native):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    cpuinfo = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: io.StringIO(cpuinfo) if path == "/proc/cpuinfo"
                        else real_open(path, *a, **k))
    assert cpu_has_native_bf16() is native


def test_no_answer_means_no_native_bf16(monkeypatch):
    def unreadable(path, *a, **k):
        raise OSError("no /proc here")

    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(builtins, "open", unreadable)
    assert cpu_has_native_bf16() is False


def test_auto_is_bf16_on_cuda_fp32_on_mps_and_explicit_choices_stand(monkeypatch):
    _capabilities(monkeypatch, amx_bf16=True)  # even on a bf16 CPU, MPS stays fp32
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", "mps") == "fp32"
    _capabilities(monkeypatch)
    for device in ("cpu", "cuda", "mps"):
        assert resolve_precision("bf16", device) == "bf16"
        assert resolve_precision("fp32", device) == "fp32"
    with pytest.raises(UsageError, match="--precision fp16: unknown precision"):
        resolve_precision("fp16", "cpu")


def test_this_machine_auto_follows_its_own_flags():
    """No stand-ins: what the machine running the tests reports (this project's AMD EPYC: neither flag, fp32)."""
    if os.path.exists("/proc/cpuinfo"):
        flags = open("/proc/cpuinfo").read().split()
        if "amx_bf16" not in flags and "avx512_bf16" not in flags:
            assert not cpu_has_native_bf16()
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")


@pytest.mark.parametrize("precision, runs, key", [("fp32", "fp32", "float32"), ("bf16", "bf16", "bf16-autocast")])
def test_the_backend_applies_the_precision_and_keys_its_cache_by_it(predictor, precision, runs, key):
    from helpers import as_backend

    from labeler.models.sam2.tracker import _autocast

    backend = as_backend(predictor, precision)
    assert backend.precision == runs
    assert backend.identity()["precision"] == key  # the names cache keys had before --precision
    with _autocast(backend.precision, backend.device):
        assert torch.is_autocast_enabled("cpu") is (runs == "bf16")
        if runs == "bf16":
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_an_unknown_precision_stops_before_the_model_is_built(monkeypatch):
    from labeler.models.backend import ModelSettings
    from labeler.models.sam2 import backend as sam2_backend

    monkeypatch.setattr(sam2_backend, "build_predictor", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(UsageError, match="unknown precision"):
        sam2_backend.Sam2Backend(ModelSettings(checkpoint="none", image_size=128, device="cpu", precision="half"))


def test_the_predictors_device_decides_auto(monkeypatch, predictor):
    """A reused predictor (the review window's) resolves auto on its own device."""
    from helpers import as_backend

    _capabilities(monkeypatch)
    assert as_backend(predictor, "auto").precision == "fp32"
    fake = types.SimpleNamespace(image_size=predictor.image_size, device=torch.device("cuda"))
    from labeler.models.backend import ModelSettings
    from labeler.models.sam2.backend import Sam2Backend

    assert Sam2Backend(ModelSettings(checkpoint="none", image_size=fake.image_size), predictor=fake).precision == "bf16"
