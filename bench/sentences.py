"""Real English sentences for the benchmarks: the prose of the Python documentation that ships with
every CPython (`pydoc_data.topics`, the text `help()` shows: the language reference and the
built-in types), cut into sentences of 5 to 60 words. No download; the same sentences wherever the
same Python version runs.

    python bench/sentences.py > sentences.txt     # one sentence a line
"""

from __future__ import annotations

import re


def sentences() -> list[str]:
    """The documentation's prose sentences of 5-60 words, in a fixed order, without duplicates."""
    import pydoc_data.topics

    text = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.split("\n")
        if any(line.startswith("      ") for line in lines):  # code examples are indented further than prose
            continue
        prose = " ".join(line.strip() for line in lines)
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z“\"])", prose):  # a sentence ends before a capital letter
            if 5 <= len(s.split()) <= 60 and s[-1] in ".!?:" and not re.search(r">>>|\.\.\.\s|^\W|[{}]|==|\|", s):
                out.append(s)
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    print("\n".join(sentences()))
