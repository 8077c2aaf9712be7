"""The walkthrough runs: every ```python block of every chapter, in order, one namespace per chapter.

A ```output block right after a python block is what that block prints, and is checked. Each
chapter runs in its own empty working directory, where its figures are drawn. The figures
committed under walkthrough/figures/ are those files: regenerate them with
`NPSQUEEZE_WALKTHROUGH_FIGURES=1 pytest tests/test_walkthrough.py`.
"""

from __future__ import annotations

import ast
import codeop
import contextlib
import importlib.util
import io
import os
import re
import shutil
from pathlib import Path

import matplotlib
import pytest

WALKTHROUGH = Path(__file__).parent.parent / "walkthrough"
CHAPTERS = sorted(WALKTHROUGH.glob("[0-9][0-9]-*.md"))
# a python block, and the output block that may follow it
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```\n(?:\s*^```output\n(.*?)^```$)?", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # markdown link or image target, anchor dropped


def imported(code: str) -> set[str]:
    """The top-level packages `code` imports, or looks up with importlib's find_spec("...")."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "find_spec" and node.args
              and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)
    return {name.split(".")[0] for name in names}


@pytest.fixture(autouse=True)
def skip_a_chapter_whose_packages_are_missing(request):
    """A chapter that runs torch or transformers (test-only), or the real all-MiniLM-L6-v2, needs them."""
    chapter = getattr(request.node, "callspec", None) and request.node.callspec.params.get("chapter")
    if chapter:
        code = (block.group(1) for block in PYTHON_BLOCK.finditer(chapter.read_text()))
        missing = sorted({name for block in code for name in imported(block)
                          if importlib.util.find_spec(name) is None})
        if missing:
            pytest.skip(f"{chapter.name} imports {', '.join(missing)}: not installed")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs(chapter, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    text = chapter.read_text()
    blocks = list(PYTHON_BLOCK.finditer(text))
    assert blocks, f"{chapter.name} has no python block"
    assert text.count("```output") == sum(block.group(2) is not None for block in blocks), \
        f"{chapter.name}: an output block must directly follow the python block that prints it"
    namespace = {"__name__": chapter.stem}
    for block in blocks:
        # Pad with newlines so that a traceback names the chapter's own line.
        code = "\n" * text.count("\n", 0, block.start(1)) + block.group(1)
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            exec(compile(code, str(chapter), "exec"), namespace)
        if block.group(2) is not None:
            line = text.count("\n", 0, block.start(2)) + 1
            assert printed.getvalue().rstrip() == block.group(2).rstrip(), f"{chapter.name}:{line}: output differs"
    for figure in re.findall(r"\]\(figures/([^)]+)\)", text):
        drawn = tmp_path / figure
        assert drawn.is_file(), f"{chapter.name} shows figures/{figure}, but its code did not draw it"
        if os.environ.get("NPSQUEEZE_WALKTHROUGH_FIGURES"):
            shutil.copyfile(drawn, WALKTHROUGH / "figures" / figure)


def test_contents_and_links():
    pages = [WALKTHROUGH / "README.md", *CHAPTERS]
    contents = pages[0].read_text()
    assert [p.name for p in CHAPTERS] == re.findall(r"\]\((\d\d-[^)]+\.md)\)", contents), \
        "walkthrough/README.md lists every chapter, in order"
    assert len(CHAPTERS) >= 8
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def repl_syntax_errors(source: str) -> list[tuple[int, str]]:
    """The SyntaxErrors that pasting `source` into the standard Python REPL would raise.

    Emulates `code.InteractiveConsole.push`: lines are buffered while `codeop.compile_command` says
    the statement is incomplete (None), and each complete chunk, or one that raises, starts a new
    buffer. One extra empty line ends the paste, as the reader's Enter does. Returns (line, message)
    for each chunk that raises, the line counted from 1 in `source`.
    """
    errors, buffer = [], []
    for number, line in enumerate([*source.splitlines(), ""], 1):
        buffer.append(line)
        try:
            incomplete = codeop.compile_command("\n".join(buffer), "<stdin>", "single") is None
        except SyntaxError as e:
            errors.append((number, f"{e.msg}: {line.strip()!r}"))
            incomplete = False
        if not incomplete:
            buffer = []
    return errors


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_blocks_paste_into_the_repl(chapter):
    """walkthrough/README.md invites readers to paste each block into Python's REPL, where a blank line
    ends an indented block and an unindented line must follow one: check that every block pastes."""
    text = chapter.read_text()
    failures = []
    for block in PYTHON_BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1))  # the chapter's line number before the block's first line
        failures += [f"{chapter.name}:{first + number}: {message}"
                     for number, message in repl_syntax_errors(block.group(1))]
    assert not failures, ("blocks that the standard REPL rejects (no blank line inside an indented block; "
                          "a blank line after each one before the next unindented line):\n" + "\n".join(failures))
