"""The asset groups the README names are the groups the code location has."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

# "`batch` group", "the `sources` group's", "group `stream`", "asset group `x`"
NEXT_TO_GROUP = re.compile(r"`([\w-]+)`\s+(?:asset\s+)?groups?\b|\bgroups?\s+`([\w-]+)`")
# "... in four asset groups by concern: `sources` (...), `batch` (...), ..." (or "grouped by
# concern: ...") up to the sentence's end
GROUP_LIST = re.compile(r"\b(?:asset groups?|grouped)\b[^:.`]*:(.*?)(?:\.\s|\.$)", re.I)


def _prose(text: str) -> str:
    """The README without code blocks, its lines joined (names wrap across lines)."""
    return " ".join(re.sub(r"```.*?```", " ", text, flags=re.S).split())


def _top_level_names(listing: str) -> list[str]:
    """Backticked names outside parentheses: `a` (`x` inside), `b` -> [a, b]."""
    depth, names = 0, []
    for token in re.finditer(r"[()]|`([\w-]+)`", listing):
        if token.group(0) == "(":
            depth += 1
        elif token.group(0) == ")":
            depth -= 1
        elif depth == 0:
            names.append(token.group(1))
    return names


def readme_group_names(text: str) -> tuple[set[str], list[list[str]]]:
    """(every name in backticks next to the word "group", the names of each "asset groups: ..." list)."""
    prose = _prose(text)
    adjacent = {a or b for a, b in NEXT_TO_GROUP.findall(prose)}
    lists = [_top_level_names(listing) for listing in GROUP_LIST.findall(prose)]
    return adjacent | {name for names in lists for name in names}, lists


def test_every_group_the_readme_names_exists_and_the_list_is_complete(offline_env):
    from appdata.definitions import build_definitions

    groups = {node.group_name for node in build_definitions().resolve_asset_graph().asset_nodes}
    named, lists = readme_group_names(README.read_text())
    assert named - groups == set(), f"README names asset groups that do not exist (real ones: {sorted(groups)})"
    assert lists, "the README no longer lists the asset groups (\"asset groups ...: `a`, `b`\")"
    assert [set(names) for names in lists] == [groups] * len(lists), f"a README list of groups is not all of {sorted(groups)}"


def test_the_reader_finds_names_next_to_group_and_in_lists():
    text = ("the `sources` group's stream side; the `batch` group takes it; (`consumer.py`, group `stream`).\n"
            "Four asset groups: `sources`\n(catalogue, `users_batch`), `batch`, `warehouse`. A `pool` is not one.\n"
            "```bash\n# the `ignored` group in code\n```")
    named, lists = readme_group_names(text)
    assert lists == [["sources", "batch", "warehouse"]]
    assert named == {"sources", "batch", "stream", "warehouse"}
    assert readme_group_names("Grouped by concern: `sources` (x), `warehouse`.")[1] == [["sources", "warehouse"]]
