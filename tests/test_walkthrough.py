"""The walkthrough runs as a reader pastes it: every ```python block of every chapter and appendix,
in order, one namespace per page, statement by statement as the standard REPL runs them, in an empty
working directory.

A ```output block right after a python block is what that block prints, the values the REPL echoes
included, and is checked. Beyond its output blocks a page may print at most ECHO_LIMIT lines, and
it may write only into OUT_DIR. The numbered chapters hold at most WORD_LIMIT words. The figures
and their freshness are tests/test_walkthrough_figures.py's; the listing, tests/test_walkthrough_listing.py's.
"""

from __future__ import annotations

import ast
import codeop
import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import matplotlib
import pytest

WALKTHROUGH = Path(__file__).parent.parent / "walkthrough"
CHAPTERS = sorted(WALKTHROUGH.glob("[0-9][0-9]-*.md"))
APPENDICES = sorted((WALKTHROUGH / "appendix").glob("*.md"))
PAGES = CHAPTERS + APPENDICES
# a python block, and the output block that may follow it
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```\n(?:\s*^```output\n(.*?)^```$)?", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # markdown link or image target, anchor dropped
ECHO_LIMIT = 40  # lines a page may print beyond its output blocks (README: "at most 40 lines")
OUT_DIR = "walkthrough-out"  # the one folder the pages write into
WORD_LIMIT = 9000  # in the numbered chapters, as `wc -w` counts them


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
def skip_a_page_whose_packages_are_missing(request):
    """A page that runs torch or transformers (test-only), or the real all-MiniLM-L6-v2, needs them."""
    page = getattr(request.node, "callspec", None) and request.node.callspec.params.get("page")
    if page:
        code = (block.group(1) for block in PYTHON_BLOCK.finditer(page.read_text()))
        missing = sorted({name for block in code for name in imported(block)
                          if importlib.util.find_spec(name) is None})
        if missing:
            pytest.skip(f"{page.name} imports {', '.join(missing)}: not installed")


def repl_chunks(source: str) -> list[tuple[int, str]]:
    """`source` cut as `code.InteractiveConsole.push` cuts a paste: (first line, text) of each statement
    the REPL runs, a line counted from 0. Lines are buffered while `codeop.compile_command` says the
    statement is incomplete; a buffer of only blank lines and comments runs nothing."""
    chunks, buffer, first = [], [], 0
    for number, line in enumerate([*source.splitlines(), ""]):
        if not buffer:
            first = number
        buffer.append(line)
        text = "\n".join(buffer)
        if codeop.compile_command(text, "<stdin>", "single") is None:
            continue
        if any(l.strip() and not l.strip().startswith("#") for l in buffer):
            chunks.append((first, text))
        buffer = []
    return chunks


def run_page(page: Path):
    """Run `page`'s blocks as pasted into the REPL; yield (block, what it printed), echoes included."""
    text = page.read_text()
    namespace = {"__name__": "__main__"}
    for block in PYTHON_BLOCK.finditer(text):
        offset = text.count("\n", 0, block.start(1))
        with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.redirect_stderr(printed):
            for first, chunk in repl_chunks(block.group(1)):
                # 'single', as the REPL compiles: an expression statement's value is echoed by
                # sys.displayhook. Padded with newlines so that a traceback names the page's own line.
                exec(compile("\n" * (offset + first) + chunk + "\n", str(page), "single"), namespace)
        yield block, printed.getvalue()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_runs_as_pasted(page, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "displayhook", sys.__displayhook__)  # the REPL's echo, whatever pytest set
    text = page.read_text()
    blocks = list(PYTHON_BLOCK.finditer(text))
    assert blocks, f"{page.name} has no python block"
    assert text.count("```output") == sum(block.group(2) is not None for block in blocks), \
        f"{page.name}: an output block must directly follow the python block that prints it"
    extra = []
    for block, printed in run_page(page):
        if block.group(2) is not None:
            line = text.count("\n", 0, block.start(2)) + 1
            assert printed.rstrip() == block.group(2).rstrip(), f"{page.name}:{line}: output differs"
        else:
            extra += printed.splitlines()
    assert len(extra) <= ECHO_LIMIT, (f"{page.name} prints {len(extra)} lines beyond its output blocks "
                                      f"(at most {ECHO_LIMIT}):\n" + "\n".join(extra[:60]))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left in ([], [OUT_DIR]), f"{page.name} wrote {left} into the working directory: only {OUT_DIR}/"


def test_the_lesson_is_at_most_9000_words():
    words = {page.name: len(page.read_text().split()) for page in CHAPTERS}
    assert sum(words.values()) <= WORD_LIMIT, words


def test_contents_and_links():
    pages = [WALKTHROUGH / "README.md", *PAGES]
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


@pytest.mark.parametrize("chapter", PAGES, ids=lambda p: p.stem)
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
