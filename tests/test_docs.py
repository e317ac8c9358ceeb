"""The documentation stays true: README.md and docs/*.md run, link and name what exists.

- Every ```python block runs as written, in a folder laid out like the repository root: `assets/demo`,
  and `output/` holding a labeled demo batch (with its COCO and YOLO exports; its targets in
  `targets/` beside it, as the manifest records) — what the front page's quick start leaves. A block
  that builds a model uses untrained weights (`checkpoint="none"`).
- Every relative link (and image) points to a file that exists, and a `#fragment` to one of its headings.
- Every `labeler/...py`, `tests/...py` or `benchmarks/...py` path and every `labeler.x.y` module named exists.
- The front page's test command is what `.ci/run` runs, extras included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEMO = ROOT / "assets" / "demo"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def blocks(language: str) -> list[tuple[str, str]]:
    """(where, code) of every fenced block in that language, in page order."""
    found = []
    for page in DOCS:
        n = 0
        for m in FENCE.finditer(page.read_text()):
            if m.group(1) == language:
                n += 1
                found.append((f"{rel(page)}#{n}", m.group(2)))
    return found


def prose(page: Path) -> str:
    """The page without its fenced blocks (links and paths are read from the text)."""
    return FENCE.sub("", page.read_text())


def test_the_docs_exist_and_have_python_examples():
    assert {p.name for p in DOCS} >= {"README.md", "guiding.md", "review.md", "outputs.md", "api.md", "scaling.md",
                                      "performance.md", "troubleshooting.md", "architecture.md"}
    assert len(blocks("python")) >= 3


@pytest.mark.parametrize("where,code", blocks("python"), ids=[w for w, _ in blocks("python")])
def test_python_example_runs_as_written(where, code, labeled_folder, tmp_path):
    if "from_pretrained" in code or "label_batch(" in code:
        assert 'checkpoint="none"' in code, f"{where}: an example that builds a model uses untrained weights"
    (tmp_path / "assets").mkdir()
    os.symlink(DEMO, tmp_path / "assets" / "demo")
    shutil.copytree(labeled_folder.parent / "targets", tmp_path / "targets")
    shutil.copytree(labeled_folder, tmp_path / "output")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, f"{where}:\n{result.stderr}"
    if "label_batch(" in code:  # the API page's example: the whole batch, as `python main.py --headless`
        assert "6 targets: 6 labeled" in result.stdout + result.stderr
        assert (tmp_path / "output" / "api" / "coco.json").is_file()
        assert time.monotonic() - start < 120


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6} (.+)$", prose(page), re.M):
        s = slug(m.group(1))
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def links(page: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"\]\(([^)\s]+)\)", prose(page))]


def test_every_relative_link_points_to_an_existing_file_and_heading():
    broken = []
    for page in DOCS:
        for target in links(page):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{rel(page)}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{rel(page)}: {target} (no heading #{fragment} in {rel(dest)})")
    assert not broken, "\n".join(broken)
    assert any(links(p) for p in DOCS)


PY_PATH = re.compile(r"(?<![\w./-])((?:labeler|tests|benchmarks)/[\w./-]*?\.py)\b")
MODULE = re.compile(r"(?<![\w./-])labeler((?:\.\w+)+)")


def test_every_path_and_module_the_docs_name_exists():
    missing = []
    for page in DOCS:
        text = page.read_text()
        missing += [f"{rel(page)}: {p}" for p in sorted(set(PY_PATH.findall(text))) if not (ROOT / p).is_file()]
        for dotted in sorted(set(MODULE.findall(text))):
            parts, here = dotted.strip(".").split("."), ROOT / "labeler"
            while parts and ((here / parts[0]).is_dir() or (here / f"{parts[0]}.py").is_file()):
                here = here / parts.pop(0)
            source = (here / "__init__.py" if here.is_dir() else here.with_suffix(".py")).read_text()
            if parts and not re.search(rf"\b{parts[0]}\b", source):  # a name the module defines (or loads lazily)
                missing.append(f"{rel(page)}: labeler{dotted} ({parts[0]} is not in {rel(here)})")
    assert not missing, "\n".join(missing)


def ci_lines() -> list[str]:
    """The install and test lines of .ci/run (comments and shell set-up left out)."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    return [line for line in lines if not line.startswith("#") and ("pip install" in line or "pytest" in line)]


def test_the_front_pages_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Tests"):]
    section = section[: section.index("\n## ", 1)]
    commands = [line.strip() for lang, code in FENCE.findall(section) if lang == "bash" for line in code.splitlines()]
    assert "bash .ci/run" in commands
    *installs, test = ci_lines()
    assert '".[test,ray,web,notebook,sam3]"' in installs[0] and "--no-deps sam3==" in installs[-1]
    assert "pytest" in test and "CI=1" in test
    block = [c for c in commands if c != "bash .ci/run"]
    assert block == ci_lines(), f"README's test command {block} is not .ci/run's {ci_lines()}"
    # Nothing else in the README installs a different set of extras for the tests.
    assert not re.search(r'pip install[^\n]*"\.\[test\]"', readme)
    ci = (ROOT / ".ci" / "run").read_text()
    # The window and browser tests' tools, on a fresh machine.
    assert "apt-get install" in ci and "xvfb" in ci and "xdotool" in ci and "chromium" in ci
