"""Every document the repository cites is in the repository, with the section cited.

Why: code that cites a page and a section for a fact is only checkable if a reader can open
that page. A citation is a ``<name>.md`` path in a tracked ``.py``, ``.yaml``, ``.sh`` or ``.md``
file (comments, docstrings, help texts, Markdown links). It resolves against the repository root
(``docs/<page>.md``); in a Markdown file also against the file's own folder (a relative link).
A bare file name in code therefore names a file at the root, and a page kept outside the
repository resolves to nothing. When the citation names a section, the section must exist: an
``#anchor`` after the path (a heading's anchor), ``, "Heading"`` after it (the start of a
heading) or a ``§`` number (a heading numbered so; the repository's pages use headings, not
numbers).

Not citations (the planted test below shows each): a path given to a command-line option, a
usage placeholder in brackets, a Markdown link's text (its target is checked), a Python string
that is only a file name, and mentions of a file the code writes (its name is such a string
outside the tests).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from test_readme import anchors

#: The suffix, kept out of this file's own text so its examples are not citations.
MD = ".md"
REPO = Path(__file__).resolve().parents[2]
SUFFIXES = (".py", ".yaml", ".sh", ".md")
#: Folders a checkout without git metadata skips (build output, environments, run output).
SKIP_DIRS = {".git", ".venv", "build", "install", "log", "out", "__pycache__"}

CITATION = re.compile(
    r"(?<![\w./$<{%@\[-])"                      # not inside a longer path, URL or placeholder
    r"(?P<path>(?:\.\.?/)*[A-Za-z0-9_][\w.+/-]*\.md)(?![\w/])"
    r"(?:#(?P<anchor>[\w-]+))?"
    r"(?:`{0,2},?\s?(?:\"(?P<heading>[^\"]+)\"|§\s?(?P<number>\d+(?:\.\d+)*)))?")
OPTION_BEFORE = re.compile(r"--[\w-]+[ =]$")
#: A Python string literal that is only a Markdown file name.
NAME_LITERAL = re.compile(r"""(["'])((?:[\w.+-]+/)*[\w.+-]+\.md)\1""")


@dataclass(frozen=True)
class Citation:
    source: Path
    line: int
    path: str
    anchor: str | None
    heading: str | None
    number: str | None

    def __str__(self) -> str:
        section = (f"#{self.anchor}" if self.anchor else f' "{self.heading}"' if self.heading
                   else f" §{self.number}" if self.number else "")
        return f"{self.source.relative_to(REPO)}:{self.line}: {self.path}{section}"


def repository_files() -> list[Path]:
    """Tracked and new (not ignored) files with a cited-document suffix; the whole tree minus
    ``SKIP_DIRS`` where git is not available."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        paths = [REPO / line for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in REPO.rglob("*")
                 if not SKIP_DIRS & set(p.relative_to(REPO).parts[:-1])]
    return sorted(p for p in paths if p.suffix in SUFFIXES and p.is_file())


def written_names(files: list[Path]) -> set[str]:
    """File names the code writes or reads: ``.md`` string literals outside ``test/``."""
    names: set[str] = set()
    for path in files:
        if path.suffix == ".py" and path.parts[len(REPO.parts)] != "test":
            names |= {Path(m.group(2)).name
                      for m in NAME_LITERAL.finditer(path.read_text(encoding="utf-8"))}
    return names


def citations(path: Path, outputs: set[str]) -> list[Citation]:
    """The citations in ``path`` (module docstring: what is and is not one)."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for m in CITATION.finditer(line):
            before, after = line[:m.start()], line[m.end("path"):]
            if OPTION_BEFORE.search(before) or Path(m["path"]).name in outputs:
                continue
            if path.suffix == ".py" and before[-1:] in ("'", '"') and after[:1] == before[-1]:
                continue  # a string that is only a file name: data, not a citation
            found.append(Citation(path, number, m["path"], m["anchor"], m["heading"],
                                  m["number"]))
    return found


def resolve(citation: Citation) -> Path | None:
    """The repository file a citation names, or None."""
    bases = [REPO] + ([citation.source.parent] if citation.source.suffix == ".md" else [])
    for base in bases:
        target = (base / citation.path).resolve()
        if target.is_file() and target.is_relative_to(REPO):
            return target
    return None


def headings(doc: Path) -> list[str]:
    """Heading texts of a Markdown file, lower case, without backticks."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [h.replace("`", "").lower()
            for h in re.findall(r"^#{1,6}\s+(.*?)\s*$", text, re.MULTILINE)]


def problem(citation: Citation) -> str | None:
    """Why ``citation`` does not resolve (None when it does)."""
    target = resolve(citation)
    if target is None:
        return "no such file in the repository"
    if target.suffix != ".md":
        return None
    if citation.anchor and citation.anchor not in anchors(target):
        return f"no heading with anchor #{citation.anchor}"
    if citation.heading:
        wanted = citation.heading.replace("`", "").lower().rstrip(".")
        if not any(h.startswith(wanted) for h in headings(target)):
            return f'no heading "{citation.heading}"'
    if citation.number and not any(re.match(rf"§?{re.escape(citation.number)}\b", h)
                                   for h in headings(target)):
        return f"no section numbered {citation.number}"
    return None


def test_every_cited_document_is_in_the_repository():
    files = repository_files()
    assert len(files) > 100
    outputs = written_names(files)
    found = [c for path in files for c in citations(path, outputs)]
    assert len(found) > 50
    bad = [f"{c}  ({why})" for c in found if (why := problem(c))]
    assert not bad, "citations of documents or sections that are not in the repository:\n" + \
        "\n".join(bad)


def test_planted_citations_are_judged(tmp_path, monkeypatch):
    """Bare names, missing sections and missing files fail; outputs and option values do not."""
    monkeypatch.setattr("test_docs_cited.REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / f"page{MD}").write_text("# Page\n\n## Pair sampling\n", encoding="utf-8")
    code = tmp_path / "mod.py"
    code.write_text(
        f'"""Facts: methods{MD} §2.5, docs/page{MD}#pair-sampling, docs/page{MD}#nope,\n'
        f'docs/page{MD}, "Pair sampling", docs/page{MD} "Missing", docs/gone{MD}."""\n'
        f'OUT = out_dir / "summary{MD}"  # written: later mentions of summary{MD} are outputs\n'
        f'USAGE = "tool --out results/speed{MD} [OUT{MD}] [text](docs/page{MD})"\n',
        encoding="utf-8")
    outputs = written_names([code])
    assert outputs == {f"summary{MD}"}
    judged = {str(c).split(": ", 1)[1]: problem(c) for c in citations(code, outputs)}
    assert judged == {
        f"methods{MD} §2.5": "no such file in the repository",
        f"docs/page{MD}#pair-sampling": None,
        f"docs/page{MD}#nope": "no heading with anchor #nope",
        f'docs/page{MD} "Pair sampling"': None,
        f'docs/page{MD} "Missing"': 'no heading "Missing"',
        f"docs/gone{MD}": "no such file in the repository",
        f"docs/page{MD}": None,
    }
    link = tmp_path / "docs" / f"other{MD}"
    link.write_text(f"See [page{MD}](page{MD}#page) and page{MD} §1.\n", encoding="utf-8")
    judged = {str(c).split(": ", 1)[1]: problem(c) for c in citations(link, outputs)}
    assert judged == {f"page{MD}#page": None, f"page{MD} §1": "no section numbered 1"}
