"""The README is a user's document: its API example runs as written, it stays short, and its
links (and those of docs/ and the model card) resolve.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MODEL_CARD = ROOT / "local_features_ros" / "data" / "weights" / "MODEL_CARD.md"
MAX_README_LINES = 260
#: The README marks its runnable example with this comment right before the code block.
API_MARKER = "<!-- api-example -->"



def user_documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), MODEL_CARD]


def api_example(text: str) -> str:
    """The ```python block right after the API marker."""
    start = text.index(API_MARKER) + len(API_MARKER)
    m = re.compile(r"\s*```python\n(.*?)\n```", re.DOTALL).match(text, start)
    assert m is not None, f"no ```python block right after {API_MARKER}"
    return m.group(1)


def test_readme_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = api_example(README.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)  # the example must not depend on the repository as cwd
    exec(compile(code, f"{README.name}:{API_MARKER}", "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(re.match(r"\d+ keypoints, D=256", line) for line in lines), lines
    assert "matches" not in lines[0] and all("inliers" in line for line in lines[1:]), lines
    n_kpts = [int(line.split()[0]) for line in lines]
    assert min(n_kpts) >= 100, lines  # the rendered frames are textured: real features


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES})"


def _strip_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


def anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, '-' for ' ')."""
    heads = re.findall(r"^#{1,6}\s+(.*?)\s*$", _strip_code(doc.read_text(encoding="utf-8")),
                       re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(doc):
    """Every relative link or image of README/docs points to a file (and heading) that exists."""
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _strip_code(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file_part, _, fragment = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            missing.append(target)
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            missing.append(target)
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files or headings: {missing}"
