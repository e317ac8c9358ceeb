"""SAM 3 fixtures: the test architecture's checkpoint in sam3.pt's layout (memory paths amplified) and the
predictor built from it, once per session; `--model sam3_test` registered for the pipeline tests."""

from __future__ import annotations

import contextlib
import importlib.util
import os

import pytest

# Found, not imported: labeler.models.sam3.internals imports it (with torch's global state contained).
MISSING = importlib.util.find_spec("sam3") is None
if MISSING and os.environ.get("CI"):  # .ci/run installs the sam3 wheel: there a missing one is a failure
    raise ImportError("sam3 is not installed: .ci/run installs it (docs/sam3.md)")
collect_ignore_glob = ["test_*.py"] if MISSING else []


def pytest_collection_finish(session):
    if MISSING:
        session.config.issue_config_time_warning(pytest.PytestWarning(
            "tests/models/sam3 not run: sam3 is not installed (python -m pip install --no-deps sam3==0.1.4, "
            "docs/sam3.md)"), stacklevel=2)


if not MISSING:
    from sam3_helpers import register_test_model

    register_test_model()


@contextlib.contextmanager
def one_thread():
    """torch on one thread: SAM 3's small test model runs about ten times faster on one thread than on two
    where the two cores are shared (its operations are small), and the recorded bytes
    (golden_output_folder.json) don't depend on the machine's core count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def sam3_checkpoint(tmp_path_factory):
    from sam3_helpers import make_sam3_checkpoint

    with one_thread():
        return make_sam3_checkpoint(tmp_path_factory.mktemp("sam3ckpt") / "sam3.pt")


@pytest.fixture(scope="session")
def sam3_predictor(sam3_checkpoint):
    from sam3_helpers import SIZE

    from labeler.models.sam3.build import TEST_ARCHITECTURE, build_tracker

    with one_thread():
        return build_tracker(sam3_checkpoint, SIZE, "cpu", architecture=TEST_ARCHITECTURE)


@pytest.fixture(scope="session")
def sam3_backend(sam3_predictor, sam3_checkpoint):
    from sam3_helpers import SIZE

    from labeler.models.backend import ModelSettings
    from labeler.models.sam3.backend import Sam3Backend

    settings = ModelSettings("sam3_test", checkpoint=sam3_checkpoint, image_size=SIZE, precision="fp32")
    return Sam3Backend(settings, predictor=sam3_predictor)
