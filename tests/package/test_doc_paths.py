"""Every test the documents name exists: ``tests/<folder>/test_x.py`` and ``...::test_name`` in README.md,
docs/, CHANGELOG.md, pyproject.toml and .ci/ point at a real file and a real test, so a moved or renamed test
cannot leave a guarantee pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "pyproject.toml", *(ROOT / "docs").glob("*.md")]
DOCUMENTS += [p for p in (ROOT / ".ci").iterdir() if p.is_file()]
TEST_REF = re.compile(r"(tests/[\w/]+\.py)(?:::(test_\w+))?")


def dangling_test_references(documents: list[Path], root: Path = ROOT) -> list[str]:
    """'document: reference' for each named test file that does not exist, or named test it does not define
    (a name ending in '_' is a prefix: 'test_sigkill_*')."""
    found = []
    for doc in documents:
        for m in TEST_REF.finditer(doc.read_text()):
            path, name = root / m.group(1), m.group(2)
            if not path.is_file():
                found.append(f"{doc.relative_to(root)}: {m.group(0)} (no such file)")
            elif name and not re.search("^def " + name + ("" if name.endswith("_") else r"\b"), path.read_text(), re.M):
                found.append(f"{doc.relative_to(root)}: {m.group(0)} (no such test)")
    return found


def test_documents_name_only_tests_that_exist():
    found = dangling_test_references(DOCUMENTS)
    assert not found, "documents name tests that do not exist:\n" + "\n".join(found)


def test_the_check_sees_a_missing_file_and_a_missing_test(tmp_path):
    (tmp_path / "tests" / "a").mkdir(parents=True)
    (tmp_path / "tests" / "a" / "test_x.py").write_text(
        "def test_here():\n    pass\n\n\ndef test_here_too():\n    pass\n"
    )
    doc = tmp_path / "doc.md"
    doc.write_text(
        "`tests/a/test_x.py::test_here`, `tests/a/test_x.py::test_gone`, `tests/test_x.py`, `tests/a/test_x.py::test_here_`"
    )
    assert dangling_test_references([doc], tmp_path) == [
        "doc.md: tests/a/test_x.py::test_gone (no such test)",
        "doc.md: tests/test_x.py (no such file)",
    ]
