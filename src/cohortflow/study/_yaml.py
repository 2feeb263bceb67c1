"""Reading a study file's text: safe YAML, no key given twice, no alias bomb."""

from __future__ import annotations

from typing import Any

import yaml

from cohortflow.errors import StudySpecError

MAX_YAML_NODES = 100_000
"""Most values (scalars, lists, mappings) a study file may hold once its aliases are
expanded: far above any real study, far below what a few nested aliases (an "alias
bomb") expand to."""


class _StudyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (naming both lines)."""

    origin = "<study>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # '<<' merges may be overridden by the mapping's own keys
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                raise StudySpecError(
                    f"{self.origin}: key '{key}' is given twice in one mapping (lines "
                    f"{first[key]} and {line}); YAML would silently keep only the last; "
                    "fix: delete one of them or merge their contents")
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """Values ``node`` holds once every alias is expanded, without expanding them: an
    alias is the same node object, so each distinct node is counted once, by multiplication.
    A node that contains itself (a recursive alias) counts as unbounded."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_:
        return MAX_YAML_NODES + 1
    open_.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, open_) + _expanded_size(v, memo, open_)
                    for k, v in node.value)
    open_.discard(key)
    memo[key] = min(size, MAX_YAML_NODES + 1)  # stay small: bombs multiply
    return memo[key]


def read_yaml(text: str, origin: str) -> Any:
    """Parse a study file's text: safe YAML, no key given twice, at most
    :data:`MAX_YAML_NODES` values once aliases are expanded (an alias bomb is refused
    before it is expanded).

    >>> read_yaml("a: 1\\nb: [x, y]\\n", "s.yaml")
    {'a': 1, 'b': ['x', 'y']}
    >>> read_yaml("name: a\\nseed: 1\\nname: b\\n", "s.yaml")
    Traceback (most recent call last):
    ...
    cohortflow.errors.StudySpecError: s.yaml: key 'name' is given twice in one mapping (lines 1 \
and 3); YAML would silently keep only the last; fix: delete one of them or merge their contents
    """
    loader = _StudyLoader(text)
    loader.origin = origin
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise StudySpecError(
                f"{origin}: the file expands to more than {MAX_YAML_NODES:,} values once its "
                "aliases (*name) are expanded, or an alias refers to itself; a study needs far "
                "fewer; fix: write the values out, or use each alias only where one copy is "
                "meant")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise StudySpecError(f"{origin}: not valid YAML: {exc}") from None
    except RecursionError:
        raise StudySpecError(f"{origin}: values nested too deeply; fix: a study file is a few "
                             "levels of mappings and lists") from None
    finally:
        loader.dispose()
