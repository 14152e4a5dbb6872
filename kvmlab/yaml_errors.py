"""PyYAML's errors, told in the lab author's terms and placed where the mistake is.

The library reports where parsing stopped (an unclosed '[' at the end of the file,
a second document, a 1024-character key); the author needs where to look and what to write.
"""

from __future__ import annotations

import yaml
from yaml.error import Mark

MAX_DEPTH = 100  # a lab file nests a handful of levels; deeper is a generated or broken file
LONGEST_KEY = 1024  # YAML's limit for a key written without '?'

_OPENERS = {
    "while parsing a flow sequence": "the list opened with '[' here is never closed",
    "while parsing a flow mapping": "the mapping opened with '{' here is never closed",
    "while scanning a quoted scalar": "the quoted value opened here has no closing quote",
}


def compose(text: str, path: str, empty: str) -> yaml.Node:
    """TEXT as a YAML node tree with marks; a syntax error or an empty file is a LabFileError at PATH (EMPTY says what belongs there)."""
    from kvmlab.errors import LabFileError

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        line, col, message = explain(exc, text)
        raise LabFileError(path, line, col, message) from None
    if root is None:
        raise LabFileError(path, 1, 1, empty)
    return root


def explain(exc: yaml.YAMLError, text: str) -> tuple[int, int, str]:
    """(line, column, message) for a PyYAML error on TEXT."""
    if isinstance(exc, yaml.reader.ReaderError):
        line, col = _line_col(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return line, col, f"character U+{code:04X} is not allowed in a YAML file (control characters are not): remove it"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, 1, f"YAML error: {exc}"
    context, problem = exc.context or "", exc.problem or ""
    at, where = _mark(exc.problem_mark or exc.context_mark)
    if "but got ':'" in problem and at[1] > LONGEST_KEY:  # a quoted key in {…} past YAML's limit
        return (*where, f"a key longer than {LONGEST_KEY} characters ends here: YAML does not allow it; shorten the key")
    if context in _OPENERS and exc.context_mark is not None:
        opened, _ = _mark(exc.context_mark)
        found = "the end of the file" if "end of stream" in problem or "<stream end>" in problem else f"line {at[0]}, column {at[1]}"
        return (*opened, f"{_OPENERS[context]} (still open at {found}): close it, or quote a value that contains brackets or quotes")
    if "another document" in problem:
        return (*at, "a lab file holds one YAML document, but a second one starts here: remove this '---' line (and what follows it)")
    if "mapping values are not allowed" in problem:
        if at[1] > LONGEST_KEY:
            return (*where, f"a key longer than {LONGEST_KEY} characters ends here: YAML does not allow it; shorten the key")
        return (*at, "a ':' followed by a space here would start a key inside a value: quote the value (e.g. \"a: b\") or start a new line")
    if "'\\t'" in problem:
        return (*at, "a tab character here: YAML indents with spaces only")
    if context.startswith("while parsing a block") and "expected <block end>" in problem:
        parent, _ = _mark(exc.context_mark)
        return (*at, f"this line is indented differently from the lines it belongs with (the block from line {parent[0]}): line them up")
    if "undefined alias" in problem:
        return (*at, f"{problem}: an alias '*name' needs an anchor '&name' defined above it")
    if context.startswith("found duplicate anchor"):
        first, _ = _mark(exc.context_mark)
        return (*at, f"{context.split(';')[0]} (first at line {first[0]}): give each anchor its own name")
    detail = f" ({context} at line {_mark(exc.context_mark)[0][0]})" if context and exc.context_mark else ""
    return (*at, f"YAML syntax error: {problem or context}{detail}")


def too_deep_at(text: str) -> tuple[int, int]:
    """Where TEXT first nests deeper than MAX_DEPTH (the scanner is iterative, so it gets there without recursing)."""
    depth = 0
    opening = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken, yaml.BlockSequenceStartToken, yaml.BlockMappingStartToken)
    closing = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, opening):
                depth += 1
                if depth > MAX_DEPTH:
                    return token.start_mark.line + 1, token.start_mark.column + 1
            elif isinstance(token, closing):
                depth -= 1
    except yaml.YAMLError:
        pass
    return 1, 1


def _mark(mark: Mark | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(line, column) of MARK, and the start of its line (for errors about a whole key)."""
    if mark is None:
        return (1, 1), (1, 1)
    return (mark.line + 1, mark.column + 1), (mark.line + 1, 1)


def _line_col(text: str, position: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - start + 1
