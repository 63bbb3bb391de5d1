"""Pipeline definitions from YAML: parsing, errors that name the bad field, and the directories
of known pipelines (the shipped ones plus `SHOPFLOOR_PIPELINE_DIRS`).

A worker polls the task queue `<name>-queue` of every known pipeline; the controller starts a
known pipeline by name. A definition that is not known (sent whole, e.g. `shopfloor pipeline
start FILE`) runs on the kind's shared queue instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shopfloor.kinds.pipeline.models import PipelineDefinition
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.settings import Settings

log = logging.getLogger("shopfloor.pipeline")

SHIPPED = Path(__file__).with_name("definitions")


class DefinitionError(ValueError):
    """A definition that cannot be used, saying where and what is wrong."""


def _where(loc: tuple[Any, ...], raw: Any) -> str:
    """`services[loki].health.interval_s` rather than `services.1.health.interval_s`."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int):
            name = node[key].get("name") if isinstance(node, list) and key < len(node) else None
            parts[-1] += f"[{name}]" if isinstance(name, str) else f"[{key}]"
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "(top level)"


def validate_definition(
    raw: Any, *, source: str = "definition", base_dir: Path | None = None
) -> PipelineDefinition:
    """`raw` (parsed YAML or JSON) as a definition. Relative `cwd`s of process services are
    taken from `base_dir` (the file's directory), which is also their default."""
    if not isinstance(raw, dict):
        raise DefinitionError(f"{source}: expected a mapping with `name` and `services`")
    try:
        definition = PipelineDefinition.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{_where(e['loc'], raw)}: {e['msg']}"
            for e in err.errors(include_url=False, include_input=False)
        )
        raise DefinitionError(f"{source}: {problems}") from None
    if base_dir is None:
        return definition
    for service in definition.services:
        if service.image is None:
            cwd = base_dir / service.cwd if service.cwd else base_dir
            service.cwd = str(cwd.resolve())
    return definition


def parse_definition(
    text: str, *, source: str = "definition", base_dir: Path | None = None
) -> PipelineDefinition:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DefinitionError(f"{source}: not valid YAML: {err}") from None
    return validate_definition(raw, source=source, base_dir=base_dir)


def load_definition(path: Path) -> PipelineDefinition:
    try:
        text = path.read_text()
    except OSError as err:
        raise DefinitionError(f"{path}: {err.strerror}") from None
    return parse_definition(text, source=str(path), base_dir=path.parent.resolve())


def definition_dirs(settings: Settings) -> list[Path]:
    return [SHIPPED, *settings.of(PipelineSettings).dirs]


def known_definitions(
    settings: Settings,
) -> tuple[dict[str, tuple[Path, PipelineDefinition]], list[str]]:
    """Every pipeline in the definition directories by name, and the problems found (a bad
    file is reported, never fatal: the other pipelines still run)."""
    found: dict[str, tuple[Path, PipelineDefinition]] = {}
    problems: list[str] = []
    for directory in definition_dirs(settings):
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            try:
                definition = load_definition(path)
            except DefinitionError as err:
                problems.append(str(err))
                continue
            if definition.name in found:
                problems.append(
                    f"{path}: pipeline {definition.name!r} is also defined in "
                    f"{found[definition.name][0]}; the first one counts"
                )
                continue
            found[definition.name] = (path, definition)
    for problem in problems:
        log.warning("pipeline definitions: %s", problem)
    return found, problems
