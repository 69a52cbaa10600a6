"""Checks that infra/template.yaml agrees with the code it deploys.

- every deployable crate under functions/ has a function resource that builds its binary;
- every EventBridge rule on Penstock's bus matches events Penstock publishes, and names only such
  events in its `source` and `detail-type`;
- every event type Penstock publishes has a rule.

The published event types come from the code (`BusMessage::published_event_types()`, printed by
the `published-events` example of penstock-app), the crates from `cargo metadata`.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cfnlint.decode import decode

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "template.yaml"
TARGET_TEMPLATE = REPO / "infra" / "target-account.yaml"

# Crates under functions/ that are not Lambda functions, and why.
NOT_DEPLOYED = {
    "penstock": "the all-in-one CLI: every function in one process on the embedded default",
}

# The keys of an event that Penstock's rules must constrain: together they name an event type.
TYPE_KEYS = ("source", "detail-type")


@dataclass(frozen=True)
class Crate:
    name: str
    directory: Path
    binaries: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    """An EventBridge rule on Penstock's bus: where it is declared and its pattern."""

    where: str
    pattern: Any


# ---------------------------------------------------------------- inputs from the code


def cargo() -> str:
    return os.environ.get("CARGO", "cargo")


def published_events() -> list[tuple[str, str]]:
    """Every (source, detail-type) Penstock publishes, from the code itself."""
    out = subprocess.run(
        [cargo(), "run", "-q", "--locked", "-p", "penstock-app", "--example", "published-events"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [(e["source"], e["detail-type"]) for e in json.loads(out)]


def function_crates() -> list[Crate]:
    """The workspace crates under functions/ that are deployed as Lambda functions."""
    out = subprocess.run(
        [cargo(), "metadata", "-q", "--locked", "--no-deps", "--format-version", "1"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    functions = (REPO / "functions").resolve()
    crates = []
    for package in json.loads(out)["packages"]:
        directory = Path(package["manifest_path"]).resolve().parent
        if directory.parent != functions or package["name"] in NOT_DEPLOYED:
            continue
        binaries = tuple(t["name"] for t in package["targets"] if "bin" in t["kind"])
        crates.append(Crate(package["name"], directory, binaries))
    return crates


def load_template(path: Path = TEMPLATE) -> dict:
    """The template with its short-form intrinsic functions (!Ref, !Sub...) decoded."""
    template, matches = decode(str(path))
    if matches:
        raise ValueError(f"{path}: " + "; ".join(str(m) for m in matches))
    return template


# ---------------------------------------------------------------- functions


def function_resources(template: dict) -> dict[str, dict]:
    return {
        name: resource
        for name, resource in template.get("Resources", {}).items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }


def check_functions(template: dict, template_dir: Path, crates: Iterable[Crate]) -> list[str]:
    """A problem for each crate without a function resource building its binary, and for each
    function resource that does not build for Lambda the way Penstock expects."""
    problems = []
    globals_ = template.get("Globals", {}).get("Function", {})
    resources = function_resources(template)
    by_dir: dict[Path, list[str]] = {}
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        code_uri = props.get("CodeUri")
        if not isinstance(code_uri, str):
            problems.append(f"{name}: CodeUri must be the path of the function's crate")
            continue
        by_dir.setdefault((template_dir / code_uri).resolve(), []).append(name)
        metadata = resource.get("Metadata", {})
        if metadata.get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{name}: Metadata.BuildMethod must be rust-cargolambda")
        if not metadata.get("BuildProperties", {}).get("Binary"):
            problems.append(f"{name}: Metadata.BuildProperties.Binary must name the binary")
        runtime = props.get("Runtime", globals_.get("Runtime"))
        if runtime != "provided.al2023":
            problems.append(f"{name}: Runtime is {runtime!r}, expected provided.al2023")
        architectures = props.get("Architectures", globals_.get("Architectures"))
        if architectures != ["arm64"]:
            problems.append(f"{name}: Architectures is {architectures!r}, expected [arm64]")
        logging = props.get("LoggingConfig", globals_.get("LoggingConfig", {}))
        if logging.get("LogFormat", globals_.get("LoggingConfig", {}).get("LogFormat")) != "JSON":
            problems.append(f"{name}: LoggingConfig.LogFormat must be JSON")
    for crate in crates:
        names = by_dir.get(crate.directory.resolve())
        if not names:
            problems.append(
                f"crate {crate.name} ({crate.directory.name}) has no AWS::Serverless::Function "
                "whose CodeUri is its directory"
            )
            continue
        for name in names:
            binary = resources[name].get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            if binary not in crate.binaries:
                problems.append(
                    f"{name}: builds binary {binary!r}, but crate {crate.name} has "
                    f"{list(crate.binaries)}"
                )
    return problems


# ---------------------------------------------------------------- event rules


def _is_ref_to(value: Any, logical_id: str) -> bool:
    return isinstance(value, dict) and value.get("Ref") == logical_id


def bus_rules(template: dict) -> tuple[list[Rule], list[str]]:
    """The rules on Penstock's bus (the template's one AWS::Events::EventBus), whether declared
    as AWS::Events::Rule or as a function's EventBridgeRule event."""
    resources = template.get("Resources", {})
    buses = [n for n, r in resources.items() if r.get("Type") == "AWS::Events::EventBus"]
    if len(buses) != 1:
        return [], [f"expected exactly one AWS::Events::EventBus, found {buses}"]
    bus = buses[0]
    rules, problems = [], []
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Events::Rule":
            if _is_ref_to(props.get("EventBusName"), bus):
                rules.append(Rule(name, props.get("EventPattern")))
        elif resource.get("Type") == "AWS::Serverless::Function":
            for event_name, event in props.get("Events", {}).items():
                if event.get("Type") not in ("EventBridgeRule", "CloudWatchEvent"):
                    continue
                event_props = event.get("Properties", {})
                if _is_ref_to(event_props.get("EventBusName"), bus):
                    rules.append(Rule(f"{name}.Events.{event_name}", event_props.get("Pattern")))
    for rule in rules:
        if not isinstance(rule.pattern, dict):
            problems.append(f"{rule.where}: the pattern must be written in the template")
    return [r for r in rules if isinstance(r.pattern, dict)], problems


def _matches_value(condition: Any, value: Any) -> bool:
    """One element of a pattern's value list against an event value (EventBridge semantics for
    the operators Penstock's rules may use)."""
    if not isinstance(condition, dict):
        return condition == value
    if len(condition) != 1:
        raise ValueError(f"unsupported pattern condition {condition!r}")
    (op, arg), = condition.items()
    if op == "exists":
        return (value is not None) == bool(arg)
    if value is None:
        return False
    if op == "prefix":
        return isinstance(value, str) and value.startswith(arg)
    if op == "suffix":
        return isinstance(value, str) and value.endswith(arg)
    if op == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == str(arg).lower()
    if op == "anything-but":
        excluded = arg if isinstance(arg, list) else [arg]
        return not any(_matches_value(e, value) for e in excluded)
    raise ValueError(f"unsupported pattern operator {op!r}")


def pattern_matches(pattern: dict, event: dict) -> bool:
    """Whether an EventBridge event pattern matches an event."""
    for key, condition in pattern.items():
        value = event.get(key)
        if isinstance(condition, dict):
            if not isinstance(value, dict) or not pattern_matches(condition, value):
                return False
        elif isinstance(condition, list):
            if not any(_matches_value(c, value) for c in condition):
                return False
        else:
            raise ValueError(f"pattern value for {key!r} must be a list or an object")
    return True


def check_rules(template: dict, published: list[tuple[str, str]]) -> list[str]:
    """A problem for each rule on the bus that matches no published event or names an event
    type that is not published, and for each published event type no rule matches."""
    rules, problems = bus_rules(template)
    events = [{"source": s, "detail-type": d} for s, d in published]
    matched: set[tuple[str, str]] = set()
    for rule in rules:
        missing = [k for k in TYPE_KEYS if k not in rule.pattern]
        if missing:
            problems.append(f"{rule.where}: the pattern must constrain {missing}")
            continue
        type_pattern = {k: rule.pattern[k] for k in TYPE_KEYS}
        try:
            hits = [e for e in events if pattern_matches(type_pattern, e)]
        except ValueError as error:
            problems.append(f"{rule.where}: {error}")
            continue
        if not hits:
            problems.append(f"{rule.where}: the pattern matches no event Penstock publishes")
        for key in TYPE_KEYS:
            for literal in rule.pattern[key]:
                if isinstance(literal, str) and not any(e[key] == literal for e in hits):
                    problems.append(
                        f"{rule.where}: {key} {literal!r} is not part of any event Penstock publishes"
                    )
        matched.update((e["source"], e["detail-type"]) for e in hits)
    for event_type in published:
        if event_type not in matched:
            problems.append(f"no rule on the bus matches published event {event_type}")
    return problems
