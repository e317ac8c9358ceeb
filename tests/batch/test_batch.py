"""The local executor's parallel reading and writing: any number of workers writes the same folder."""

from __future__ import annotations

import threading

from helpers import as_backend, make_inputs

from labeler.batch import local as batch
from labeler.batch.recorder import BatchRecorder
from labeler.models.sam2.tracker import Sam2TargetLabeler
from labeler.prompts.prompt_set import PromptSet
from labeler.utils.images import list_images


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_parallel_reading_and_writing_gives_the_serial_folder_byte_for_byte(predictor, tmp_path, monkeypatch):
    prompts_file, target_folder = make_inputs(tmp_path)  # the golden batch's inputs, an unreadable one included
    prompts = PromptSet.load(prompts_file)
    targets = [p for p in list_images(target_folder) if p.stem in ("broken", "same", "t20", "t22")]
    writers: set[str] = set()
    second = threading.Event()
    write = batch.write_target

    def write_target(*args):  # the first write waits for a second one, so that two threads write at once
        writers.add(threading.current_thread().name)
        if len(writers) == 1 and workers > 1:
            assert second.wait(60), "no second writer started"
        second.set()
        return write(*args)

    monkeypatch.setattr(batch, "write_target", write_target)
    folders = {}
    for workers in (1, 3):
        writers.clear(), second.clear()
        out = tmp_path / f"out{workers}"
        backend = as_backend(predictor)
        recorder = BatchRecorder(out, targets, prompts.classes, "fp", progress=False)
        summary = batch.run_batch(Sam2TargetLabeler(backend, prompts), recorder, workers=workers,
                                  prepare=backend.prepare)
        assert (summary.labeled, summary.failed) == (4, 1)
        assert len(writers) == 1 if workers == 1 else len(writers) >= 2, writers
        folders[workers] = _files(out)
    assert folders[3] == folders[1]  # manifest.json too: records keep the targets' order


def test_on_progress_counts_every_target_with_the_progress_bar_off(tmp_path):
    """`on_progress` (the web page's progress line) counts targets itself: with `progress=False` (--quiet)
    tqdm's disabled bar counts nothing."""
    _, target_dir = make_inputs(tmp_path)
    targets = list_images(target_dir)
    calls = []
    with BatchRecorder(tmp_path / "out", targets, {1: "a"}, "fp", progress=False,
                       on_progress=lambda done, total: calls.append((done, total))) as recorder:
        for position in range(len(recorder.todo)):
            recorder.accept(position, None)
    assert calls == [(i, len(targets)) for i in range(1, len(targets) + 1)]
