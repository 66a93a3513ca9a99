"""`outputs:` templates: OSS prefixes per capability with {id}, {analysis} and {capability},
checked when the config loads (`output_templates`) and filled per analysis when the manifest
is read (`fill_output`), each value escaped by one rule (`output_segment`)."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .capabilities import CAPABILITIES, resolve
from .echo import clipped, shown
from .errors import ConfigError

__all__ = ["OUTPUT_PLACEHOLDERS", "fill_output", "output_segment", "output_template_problem", "output_templates"]


#: The placeholders an `outputs` template may hold, filled per analysis by `fill_output`.
OUTPUT_PLACEHOLDERS = ("id", "analysis", "capability")
_TEMPLATE_EXAMPLE = "oss://bucket/results/{analysis}/{id}/"
_TEMPLATE_BUCKET = re.compile(r"oss://[^/{}\s]+/")


def output_template_problem(template: object) -> str | None:
    """None for an OSS prefix template such as 'oss://bucket/results/{analysis}/{id}/' whose
    placeholders are only {id}, {analysis} and {capability}; otherwise what is wrong."""
    if not isinstance(template, str):
        return f"must be an OSS prefix template such as {_TEMPLATE_EXAMPLE!r}, got {shown(template)}"
    if not _TEMPLATE_BUCKET.match(template):
        return (f"must start with oss:// and a bucket written out, then a slash, such as {_TEMPLATE_EXAMPLE!r} "
                f"(got {shown(template)})")
    allowed = ", ".join("{" + name + "}" for name in OUTPUT_PLACEHOLDERS)
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        return (f"is not a valid template ({exc}) in {shown(template)}: placeholders are {allowed}; "
                "write a literal brace twice ({{ or }})")
    for name, spec, conversion in fields:
        if name not in OUTPUT_PLACEHOLDERS or spec or conversion:
            given = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            return f"unknown placeholder {clipped(given)} in {shown(template)}: use only {allowed}"
    # Without {id} every item of the capability writes under one prefix, over each other's outputs.
    if "id" not in {name for name, _, _ in fields}:
        return (f"must hold {{id}}, or every item writes its output under the same prefix: "
                f"such as {_TEMPLATE_EXAMPLE!r} (got {shown(template)})")
    if not template.endswith("/"):
        return f"must end with '/': it is a prefix the service writes under, such as {_TEMPLATE_EXAMPLE!r}"
    return None


def output_templates(outputs: Mapping[str, Any]) -> dict[str, str]:
    """`outputs` by canonical capability name, each template checked; ConfigError names the key."""
    templates: dict[str, str] = {}
    given: dict[str, str] = {}
    for name, template in outputs.items():
        key = f"outputs.{clipped(name)}"
        cap = resolve(name) if isinstance(name, str) else None
        if cap is None:
            raise ConfigError(f"unknown capability (known: {', '.join(CAPABILITIES)})", key=key)
        if "oss" not in cap.output_types:
            raise ConfigError(f"{cap.name} takes no output location (its result is in the result line): "
                              "remove this entry", key=key)
        if cap.name in templates:
            raise ConfigError(f"{cap.name} has a template already (outputs.{given[cap.name]}): give one per "
                              "capability", key=key)
        problem = output_template_problem(template)
        if problem:
            raise ConfigError(problem, key=key)
        templates[cap.name], given[cap.name] = template, name
    return templates


def output_segment(value: str) -> str:
    """`value` as an `outputs` template holds it: one OSS path segment, whatever it contains.

    The one rule: percent-encode (RFC 3986) the UTF-8 bytes of everything but ASCII letters,
    digits and `-` `.` `_` `~`, and the dots of a value made only of dots. So `/` cannot add a
    level (`a/x` becomes `a%2Fx`, never under `a/`), `../../etc` cannot climb (`..%2F..%2Fetc`),
    `?`, `#` and spaces are never taken for a URL's query, fragment or a separator, and two
    different values never give the same segment (`%` itself becomes `%25`). Ids of letters,
    digits, `-`, `_` and `.` are unchanged.
    """
    quoted = quote(value, safe="")
    if quoted and quoted.strip(".") == "":  # "." and ".." name directories in paths
        quoted = quoted.replace(".", "%2E")
    return quoted


def fill_output(template: str, *, item_id: str, analysis: str, capability: str) -> str:
    """An `outputs` template (checked by `output_template_problem`) filled for one analysis,
    each value escaped as one path segment (`output_segment`)."""
    return template.format(id=output_segment(item_id), analysis=output_segment(analysis),
                           capability=output_segment(capability))
