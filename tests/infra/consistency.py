"""Checks that infra/template.yaml agrees with the code it deploys.

- every deployable crate under functions/ has a function resource that builds its binary;
- every EventBridge rule on Penstock's bus matches events Penstock publishes, and names only such
  events in its `source` and `detail-type`;
- every event type Penstock publishes has a rule;
- every trigger rule (a rule on the default bus targeting the webhook function) names only event
  types the webhook turns into starts, matches the documented events of its type, has retries, a
  dead-letter queue allowed to receive from it, and the permission to invoke the function; every
  AWS service event type the webhook takes has such a rule;
- the scheduled start's input is one the webhook takes;
- every `PENSTOCK_*` variable a function's `main.rs` reads is set for it, and a function that
  builds the artifact store or the action providers gets the artifact bucket and key.

The published event types come from the code (`BusMessage::published_event_types()`, printed by
the `published-events` example of penstock-app), the types the webhook takes from the code too
(`aws_events::TRIGGER_EVENT_TYPES`, printed by the `trigger-events` example of penstock-webhook),
the crates from `cargo metadata`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cfnlint.decode import decode

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "template.yaml"
WEBHOOK_FIXTURES = REPO / "functions" / "webhook" / "tests" / "fixtures" / "aws"
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


@functools.lru_cache(maxsize=None)
def examples_dir() -> Path:
    """The workspace's examples, built once for the whole workspace: the features are then the
    ones the test build (`cargo nextest run --workspace`) unified, so its dependencies are
    reused instead of compiled again for one package's feature set."""
    subprocess.run(
        [cargo(), "build", "-q", "--locked", "--workspace", "--examples"], cwd=REPO, check=True
    )
    metadata = json.loads(
        subprocess.run(
            [cargo(), "metadata", "-q", "--locked", "--no-deps", "--format-version", "1"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    return Path(metadata["target_directory"]) / "debug" / "examples"


def run_example(name: str) -> str:
    """The standard output of the workspace example `name`."""
    return subprocess.run(
        [str(examples_dir() / name)], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def published_events() -> list[tuple[str, str]]:
    """Every (source, detail-type) Penstock publishes, from the code itself."""
    out = run_example("published-events")
    return [(e["source"], e["detail-type"]) for e in json.loads(out)]


def trigger_event_types() -> list[tuple[str, str]]:
    """Every (source, detail-type) the webhook function turns into starts, from the code."""
    out = run_example("trigger-events")
    return [(e["source"], e["detail-type"]) for e in json.loads(out)]


def webhook_fixture_events() -> dict[str, dict]:
    """The EventBridge events (with a `detail-type`) among the webhook's test fixtures, by file."""
    events = {}
    for path in sorted(WEBHOOK_FIXTURES.glob("*.json")):
        event = json.loads(path.read_text())
        if isinstance(event, dict) and "detail-type" in event:
            events[path.name] = event
    return events


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


# ---------------------------------------------------------------- trigger rules

# The function every trigger reaches.
WEBHOOK = "Webhook"
# The input Scheduler schedules send to the webhook (the scheduled start).
SCHEDULE = "ScheduledPipelineStart"
DEAD_LETTER_QUEUE = "EventDeliveryDeadLetterQueue"


def _is_getatt(value: Any, logical_id: str, attribute: str = "Arn") -> bool:
    return isinstance(value, dict) and value.get("Fn::GetAtt") in (
        [logical_id, attribute],
        f"{logical_id}.{attribute}",
    )


def trigger_rules(template: dict) -> dict[str, dict]:
    """AWS::Events::Rule resources on the default bus with the webhook function as a target."""
    rules = {}
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Events::Rule":
            continue
        props = resource.get("Properties", {})
        if props.get("EventBusName") not in (None, "default"):
            continue
        if any(_is_getatt(t.get("Arn"), WEBHOOK) for t in props.get("Targets", [])):
            rules[name] = resource
    return rules


def _dead_letter_sources(template: dict) -> list[Any]:
    """The aws:SourceArn values the dead-letter queue's policy lets EventBridge send from."""
    sources = []
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::SQS::QueuePolicy":
            continue
        props = resource.get("Properties", {})
        if not any(_is_ref_to(q, DEAD_LETTER_QUEUE) for q in props.get("Queues", [])):
            continue
        for statement in props.get("PolicyDocument", {}).get("Statement", []):
            if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
                continue
            for condition in statement.get("Condition", {}).values():
                arns = condition.get("aws:SourceArn")
                if arns is not None:
                    sources.extend(arns if isinstance(arns, list) else [arns])
    return sources


def check_trigger_rules(
    template: dict, accepted: list[tuple[str, str]], fixtures: dict[str, dict]
) -> list[str]:
    """A problem for each trigger rule that routes an event type the webhook does not take, lacks
    retries, a dead-letter queue or the permission to invoke; for each AWS service event type
    the webhook takes that no trigger rule routes; and for each fixture event of a routed type
    that its rule does not match."""
    problems = []
    rules = trigger_rules(template)
    resources = template.get("Resources", {})
    permitted = {
        json.dumps(r["Properties"].get("SourceArn"), sort_keys=True)
        for r in resources.values()
        if r.get("Type") == "AWS::Lambda::Permission"
        and r.get("Properties", {}).get("Principal") == "events.amazonaws.com"
        and _is_getatt(r["Properties"].get("FunctionName"), WEBHOOK)
    }
    dead_letter_sources = [json.dumps(s, sort_keys=True) for s in _dead_letter_sources(template)]
    routed: set[tuple[str, str]] = set()
    for name, resource in rules.items():
        props = resource["Properties"]
        pattern = props.get("EventPattern")
        if not isinstance(pattern, dict) or any(k not in pattern for k in TYPE_KEYS):
            problems.append(f"{name}: the pattern must name source and detail-type")
            continue
        for source in pattern["source"]:
            for detail_type in pattern["detail-type"]:
                if (source, detail_type) not in accepted:
                    problems.append(
                        f"{name}: routes {source} {detail_type!r} events, which the webhook does "
                        "not turn into starts"
                    )
                routed.add((source, detail_type))
        for target in props.get("Targets", []):
            if not _is_getatt(target.get("Arn"), WEBHOOK):
                continue
            if "RetryPolicy" not in target:
                problems.append(f"{name}: the webhook target needs a RetryPolicy")
            if not _is_getatt(target.get("DeadLetterConfig", {}).get("Arn"), DEAD_LETTER_QUEUE):
                problems.append(f"{name}: the webhook target needs {DEAD_LETTER_QUEUE} as DeadLetterConfig")
        arn = json.dumps({"Fn::GetAtt": [name, "Arn"]}, sort_keys=True)
        arn_short = json.dumps({"Fn::GetAtt": f"{name}.Arn"}, sort_keys=True)
        if arn not in permitted and arn_short not in permitted:
            problems.append(f"{name}: no AWS::Lambda::Permission lets this rule invoke the webhook")
        if arn not in dead_letter_sources and arn_short not in dead_letter_sources:
            problems.append(f"{name}: {DEAD_LETTER_QUEUE}'s policy does not let this rule send to it")
        for file, event in fixtures.items():
            if (event.get("source"), event.get("detail-type")) in {
                (s, d) for s in pattern["source"] for d in pattern["detail-type"]
            } and not pattern_matches(pattern, event):
                problems.append(f"{name}: does not match the documented event {file}")
    for source, detail_type in accepted:
        # AWS services' events arrive through rules; Penstock's own schedules and EventBridge
        # scheduled rules (made by the user, named like their pipeline) invoke directly.
        if source.startswith("aws.") and source != "aws.events" and (source, detail_type) not in routed:
            problems.append(f"no trigger rule routes {source} {detail_type!r} events to the webhook")
    return problems


SCHEDULER_PLACEHOLDERS = {
    "<aws.scheduler.schedule-arn>": "arn:aws:scheduler:us-east-1:123456789012:schedule/group/name",
    "<aws.scheduler.scheduled-time>": "2026-01-31T06:00:00Z",
}


def fill_schedule_input(text: str, pipeline: str) -> dict:
    """A schedule's Input as the webhook receives it: the pipeline's name substituted, then
    Scheduler's placeholders filled."""
    text = text.replace("${ScheduledPipelineName}", pipeline)
    for placeholder, value in SCHEDULER_PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


def check_schedule_input(template: dict, accepted: list[tuple[str, str]]) -> list[str]:
    """A problem when the scheduled start's input is not one the webhook takes."""
    schedule = template.get("Resources", {}).get(SCHEDULE)
    if schedule is None:
        return [f"no {SCHEDULE} schedule"]
    target = schedule["Properties"]["Target"]
    problems = []
    if not _is_getatt(target.get("Arn"), WEBHOOK):
        problems.append(f"{SCHEDULE}: the target must be the webhook function")
    text = target.get("Input")
    if isinstance(text, dict) and "Fn::Sub" in text:
        text = text["Fn::Sub"]
    if not isinstance(text, str):
        return problems + [f"{SCHEDULE}: Input must be a string (or !Sub of one)"]
    try:
        event = fill_schedule_input(text, "my-pipeline")
    except json.JSONDecodeError as error:
        return problems + [f"{SCHEDULE}: Input is not JSON once filled: {error}"]
    if (event.get("source"), event.get("detail-type")) not in accepted:
        problems.append(f"{SCHEDULE}: Input is not an event type the webhook takes")
    detail = event.get("detail", {})
    for member in ("pipelineName", "schedule", "scheduledTime"):
        if not detail.get(member):
            problems.append(f"{SCHEDULE}: Input has no detail.{member}")
    if detail.get("pipelineName") != "my-pipeline":
        problems.append(f"{SCHEDULE}: detail.pipelineName must be the ScheduledPipelineName parameter")
    return problems


# ---------------------------------------------------------------- environment

# What a function's main.rs calls that needs the artifact store configured (both variables: the
# configuration refuses one without the other). Without them, `providers()` is None and the
# advancer's sweeper would silently never poll builds.
ARTIFACT_CALLS = (".providers(", "require_artifacts(")
ARTIFACT_VARS = ("PENSTOCK_ARTIFACT_BUCKET", "PENSTOCK_KMS_KEY_ARN")


def function_environment(template: dict, resource: dict) -> set[str]:
    names = set(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    return names | set(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}))


def check_environment(template: dict, template_dir: Path) -> list[str]:
    """A problem for each variable a function's main.rs names that the template does not set for
    it, and for the artifact store's variables missing where main.rs builds the store."""
    problems = []
    for name, resource in function_resources(template).items():
        code_uri = resource.get("Properties", {}).get("CodeUri")
        if not isinstance(code_uri, str):
            continue
        main = (template_dir / code_uri / "src" / "main.rs").resolve()
        if not main.exists():
            continue
        text = main.read_text()
        wanted = set(re.findall(r'"(PENSTOCK_[A-Z0-9_]+)"', text))
        if any(call in text for call in ARTIFACT_CALLS):
            wanted |= set(ARTIFACT_VARS)
        missing = sorted(wanted - function_environment(template, resource))
        if missing:
            problems.append(f"{name}: {main.relative_to(REPO)} reads {missing}, which the template does not set")
    return problems
