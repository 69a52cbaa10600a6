"""infra/template.yaml and infra/target-account.yaml: agreement with the code, the SAM transform,
and the security properties the deployment promises."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from cfnlint.api import lint
from samtranslator.translator.transform import transform

import consistency
from consistency import (
    Crate,
    check_environment,
    check_functions,
    check_rules,
    check_schedule_input,
    check_trigger_rules,
    pattern_matches,
)

PUBLISHED = [
    ("penstock", "Penstock Action Scheduled"),
    ("penstock", "Penstock Action Cancelled"),
    ("penstock.codepipeline", "CodePipeline Pipeline Execution State Change"),
]


@pytest.fixture(scope="module")
def template() -> dict:
    return consistency.load_template()


@pytest.fixture(scope="module")
def published() -> list[tuple[str, str]]:
    return consistency.published_events()


@pytest.fixture(scope="module")
def accepted() -> list[tuple[str, str]]:
    return consistency.trigger_event_types()


ACCEPTED = [
    ("aws.events", "Scheduled Event"),
    ("penstock.scheduler", "Penstock Scheduled Start"),
    ("aws.s3", "Object Created"),
    ("aws.ecr", "ECR Image Action"),
]


# ---------------------------------------------------------------- the real template and code


def test_published_events_come_from_the_code(published):
    assert ("penstock", "Penstock Action Scheduled") in published
    assert len(published) == len(set(published))


def test_every_published_event_has_a_rule_and_every_rule_a_published_event(template, published):
    assert check_rules(template, published) == []


def test_trigger_event_types_come_from_the_code(accepted):
    assert sorted(accepted) == sorted(ACCEPTED)


def test_trigger_rules_route_what_the_webhook_takes_and_match_the_documented_events(template, accepted):
    assert sorted(consistency.trigger_rules(template)) == ["EcrImagePushedTrigger", "S3ObjectCreatedTrigger"]
    fixtures = consistency.webhook_fixture_events()
    assert {"s3-object-created.json", "ecr-image-push.json"} <= set(fixtures)
    assert check_trigger_rules(template, accepted, fixtures) == []


def test_the_scheduled_start_sends_what_the_webhook_takes(template, accepted):
    assert check_schedule_input(template, accepted) == []


def test_the_readmes_schedule_command_sends_the_templates_input(template):
    """`aws scheduler create-schedule` in the README sends the same input as the template's
    schedule (for another pipeline)."""
    readme = (consistency.REPO / "README.md").read_text()
    (target,) = re.findall(r"aws scheduler create-schedule .*?--target '(\{.*?\})'", readme, re.S)
    readme_input = json.loads(target)["Input"]
    template_input = template["Resources"]["ScheduledPipelineStart"]["Properties"]["Target"]["Input"]["Fn::Sub"]
    pipeline = consistency.fill_schedule_input(readme_input, "ignored")["detail"]["pipelineName"]
    assert consistency.fill_schedule_input(readme_input, pipeline) == consistency.fill_schedule_input(
        template_input, pipeline
    )


def test_every_variable_a_function_reads_is_set(template):
    assert check_environment(template, consistency.TEMPLATE.parent) == []


def test_every_function_crate_has_a_function_resource(template):
    crates = consistency.function_crates()
    problems = check_functions(template, consistency.TEMPLATE.parent, crates)
    assert problems == []


def test_function_resources_point_into_functions(template):
    for name, resource in consistency.function_resources(template).items():
        code_uri = (consistency.TEMPLATE.parent / resource["Properties"]["CodeUri"]).resolve()
        assert code_uri.parent == (consistency.REPO / "functions").resolve(), name


def test_sam_transform_succeeds_and_the_result_lints_clean(template, monkeypatch):
    """What `sam validate` does (the SAM translator), then cfn-lint on the plain CloudFormation
    it produces: generated roles, rules, permissions and the API's stage are checked too."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    document = json.loads(json.dumps(template))
    for resource in document["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            # sam build replaces the crate path with the uploaded package.
            resource["Properties"]["CodeUri"] = "s3://bucket/function.zip"

    class NoManagedPolicies:
        def load(self):
            return {}

    transformed = transform(document, {}, NoManagedPolicies())
    types = {r["Type"] for r in transformed["Resources"].values()}
    assert "AWS::Serverless::Function" not in types
    assert {"AWS::Lambda::Function", "AWS::Events::Rule", "AWS::Scheduler::Schedule"} <= types
    matches = lint(json.dumps(transformed), regions=["us-east-1"])
    assert [str(m) for m in matches] == []


# ---------------------------------------------------------------- security properties


def _statements(policy_document: dict) -> list[dict]:
    statements = policy_document["Statement"]
    out = []
    for s in statements:
        if isinstance(s, dict) and "Fn::If" in s:
            s = s["Fn::If"][1]
        out.append(s)
    return out


def test_only_the_dispatcher_and_the_advancer_assume_roles_and_only_the_allowed_ones(template):
    """The dispatcher starts deploys through an action's roleArn; the advancer's sweeper polls
    them through the same role."""
    assumers = {}
    for name, resource in consistency.function_resources(template).items():
        for policy in resource["Properties"].get("Policies", []):
            if "Statement" not in policy:
                continue
            for s in _statements(policy):
                actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                if any(a.startswith("sts:") for a in actions):
                    assumers[name] = s["Resource"]
    allowed = {"Ref": "AllowedCrossAccountRoleArns"}
    assert assumers == {"Dispatcher": allowed, "Advancer": allowed}


def test_the_github_token_is_read_by_the_dispatcher_the_advancer_and_the_webhook_only(template):
    """Each may GetSecretValue on the GitHub token's secret alone, and only when one is given;
    no other inline statement grants Secrets Manager (the other secrets go through SAM's
    AWSSecretsManagerGetSecretValuePolicy, each on its own secret)."""
    granted = {}
    for name, resource in consistency.function_resources(template).items():
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy.get("Statement", []):
                condition, body = None, statement
                if "Fn::If" in statement:
                    condition, body, _ = statement["Fn::If"]
                actions = body["Action"] if isinstance(body["Action"], list) else [body["Action"]]
                if any(a.startswith("secretsmanager:") for a in actions):
                    granted[name] = (condition, actions, body["Resource"])
    token = ("HasGitHubToken", ["secretsmanager:GetSecretValue"], {"Ref": "GitHubTokenSecretArn"})
    assert granted == {"Dispatcher": token, "Advancer": token, "Webhook": token}


def test_state_table(template):
    table = template["Resources"]["StateTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["DeletionProtectionEnabled"] is True
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "gsi1"
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == ["gsi1pk", "gsi1sk"]


def test_artifact_bucket_refuses_plain_transport_and_unencrypted_puts(template):
    bucket = template["Resources"]["ArtifactBucket"]["Properties"]
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["BucketKeyEnabled"] is True
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    policy = template["Resources"]["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]
    denies = [s for s in _statements(policy) if s["Effect"] == "Deny"]
    conditions = [s["Condition"] for s in denies]
    assert {"Bool": {"aws:SecureTransport": "false"}} in conditions
    assert {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}} in conditions


def test_artifact_key_grants_decrypt_to_the_target_accounts(template):
    key = template["Resources"]["ArtifactKey"]["Properties"]
    grants = [
        s for s in _statements(key["KeyPolicy"]) if s["Principal"]["AWS"] == {"Ref": "TargetAccountIds"}
    ]
    assert len(grants) == 1 and "kms:Decrypt" in grants[0]["Action"]


def test_target_account_role_trusts_only_the_dispatcher_and_advancer_roles_with_an_external_id():
    target = consistency.load_template(consistency.TARGET_TEMPLATE)
    trust = target["Resources"]["CrossAccountRole"]["Properties"]["AssumeRolePolicyDocument"]
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {
        "AWS": [{"Ref": "DispatcherRoleArn"}, {"Ref": "AdvancerRoleArn"}]
    }
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}


def test_environment_variables_are_documented(template):
    """Every variable the template sets is in the Configuration table the function crates read."""
    readme = (consistency.REPO / "infra" / "README.md").read_text()
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for resource in consistency.function_resources(template).values():
        names |= set(resource["Properties"].get("Environment", {}).get("Variables", {}))
    undocumented = sorted(n for n in names if f"`{n}`" not in readme)
    assert undocumented == []


# ---------------------------------------------------------------- the checker can fail


def _without(template: dict, resource: str) -> dict:
    changed = copy.deepcopy(template)
    del changed["Resources"][resource]
    return changed


def test_checker_reports_a_published_event_without_rule(template):
    problems = check_rules(_without(template, "Dispatcher"), PUBLISHED)
    assert "no rule on the bus matches published event ('penstock', 'Penstock Action Scheduled')" in problems


def test_checker_reports_a_rule_matching_nothing_published(template):
    changed = copy.deepcopy(template)
    changed["Resources"]["Stray"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {
            "EventBusName": {"Ref": "Bus"},
            "EventPattern": {"source": ["penstock"], "detail-type": ["Penstock Engine Input"]},
        },
    }
    problems = check_rules(changed, PUBLISHED)
    assert "Stray: the pattern matches no event Penstock publishes" in problems


def test_checker_reports_a_stale_detail_type_beside_a_live_one(template):
    changed = copy.deepcopy(template)
    pattern = changed["Resources"]["Dispatcher"]["Properties"]["Events"]["Actions"]["Properties"]["Pattern"]
    pattern["detail-type"].append("Penstock Action Renamed")
    problems = check_rules(changed, PUBLISHED)
    assert any("'Penstock Action Renamed' is not part of any event" in p for p in problems)


def test_checker_reports_a_pattern_that_does_not_name_the_event_type(template):
    changed = copy.deepcopy(template)
    pattern = changed["Resources"]["Dispatcher"]["Properties"]["Events"]["Actions"]["Properties"]["Pattern"]
    del pattern["detail-type"]
    problems = check_rules(changed, PUBLISHED)
    assert any("must constrain ['detail-type']" in p for p in problems)


def test_checker_ignores_rules_on_other_buses(template, published):
    changed = copy.deepcopy(template)
    changed["Resources"]["Elsewhere"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {"EventPattern": {"source": ["aws.s3"], "detail-type": ["Object Created"]}},
    }
    assert check_rules(changed, published) == []


def test_trigger_checker_reports_a_rule_routing_what_the_webhook_does_not_take(template):
    changed = copy.deepcopy(template)
    pattern = changed["Resources"]["S3ObjectCreatedTrigger"]["Properties"]["EventPattern"]
    pattern["detail-type"].append("Object Deleted")
    problems = check_trigger_rules(changed, ACCEPTED, {})
    assert problems == [
        "S3ObjectCreatedTrigger: routes aws.s3 'Object Deleted' events, which the webhook does not turn into starts"
    ]


def test_trigger_checker_reports_an_event_type_without_rule(template):
    problems = check_trigger_rules(_without(template, "EcrImagePushedTrigger"), ACCEPTED, {})
    assert problems == ["no trigger rule routes aws.ecr 'ECR Image Action' events to the webhook"]


def test_trigger_checker_reports_a_pattern_missing_the_documented_event(template):
    changed = copy.deepcopy(template)
    pattern = changed["Resources"]["EcrImagePushedTrigger"]["Properties"]["EventPattern"]
    pattern["detail"]["action-type"] = ["PULL"]
    fixtures = consistency.webhook_fixture_events()
    problems = check_trigger_rules(changed, ACCEPTED, fixtures)
    assert problems == ["EcrImagePushedTrigger: does not match the documented event ecr-image-push.json"]


def test_trigger_checker_reports_missing_retries_dead_letters_and_permission(template):
    changed = _without(template, "S3ObjectCreatedTriggerPermission")
    (target,) = changed["Resources"]["S3ObjectCreatedTrigger"]["Properties"]["Targets"]
    del target["RetryPolicy"]
    del target["DeadLetterConfig"]
    policy = changed["Resources"]["EventDeliveryDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]
    for statement in policy["Statement"]:
        arns = statement.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn", [])
        arns[:] = [a for a in arns if a != {"Fn::GetAtt": ["S3ObjectCreatedTrigger", "Arn"]}]
    problems = check_trigger_rules(changed, ACCEPTED, {})
    assert problems == [
        "S3ObjectCreatedTrigger: the webhook target needs a RetryPolicy",
        "S3ObjectCreatedTrigger: the webhook target needs EventDeliveryDeadLetterQueue as DeadLetterConfig",
        "S3ObjectCreatedTrigger: no AWS::Lambda::Permission lets this rule invoke the webhook",
        "S3ObjectCreatedTrigger: EventDeliveryDeadLetterQueue's policy does not let this rule send to it",
    ]


def test_schedule_checker_reports_an_input_the_webhook_does_not_take(template):
    changed = copy.deepcopy(template)
    target = changed["Resources"]["ScheduledPipelineStart"]["Properties"]["Target"]
    target["Input"]["Fn::Sub"] = target["Input"]["Fn::Sub"].replace(
        "Penstock Scheduled Start", "Penstock Scheduled Run"
    ).replace('"scheduledTime"', '"time"')
    problems = check_schedule_input(changed, ACCEPTED)
    assert problems == [
        "ScheduledPipelineStart: Input is not an event type the webhook takes",
        "ScheduledPipelineStart: Input has no detail.scheduledTime",
    ]


def test_environment_checker_reports_variables_a_function_reads_but_is_not_given(template):
    changed = copy.deepcopy(template)
    del changed["Resources"]["Advancer"]["Properties"]["Environment"]
    del changed["Resources"]["Api"]["Properties"]["Environment"]["Variables"]["PENSTOCK_MAX_BODY_BYTES"]
    problems = check_environment(changed, consistency.TEMPLATE.parent)
    assert problems == [
        "Api: functions/api/src/main.rs reads ['PENSTOCK_MAX_BODY_BYTES'], which the template does not set",
        "Advancer: functions/advancer/src/main.rs reads ['PENSTOCK_ARTIFACT_BUCKET', 'PENSTOCK_GITHUB_API_URL',"
        " 'PENSTOCK_GITHUB_TOKEN_SECRET_ARN', 'PENSTOCK_KMS_KEY_ARN', 'PENSTOCK_PUBLIC_URL'], which the template does not set",
    ]


def test_checker_reports_a_crate_without_function(template):
    crates = [Crate("penstock-notifier", Path(consistency.REPO / "functions" / "notifier"), ("notifier",))]
    problems = check_functions(template, consistency.TEMPLATE.parent, crates)
    assert problems == [
        "crate penstock-notifier (notifier) has no AWS::Serverless::Function whose CodeUri is its directory"
    ]


def test_checker_reports_a_binary_the_crate_does_not_have(template):
    crates = [Crate("penstock-api", Path(consistency.REPO / "functions" / "api"), ("penstock-api",))]
    problems = check_functions(template, consistency.TEMPLATE.parent, crates)
    assert problems == ["Api: builds binary 'api', but crate penstock-api has ['penstock-api']"]


def test_checker_reports_a_function_built_for_the_wrong_platform(template):
    changed = copy.deepcopy(template)
    changed["Resources"]["Api"]["Properties"]["Architectures"] = ["x86_64"]
    problems = check_functions(changed, consistency.TEMPLATE.parent, [])
    assert problems == ["Api: Architectures is ['x86_64'], expected [arm64]"]


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        ({"source": ["penstock"]}, {"source": "penstock"}, True),
        ({"source": ["penstock"]}, {"source": "penstock.codepipeline"}, False),
        ({"source": [{"prefix": "penstock"}]}, {"source": "penstock.codepipeline"}, True),
        ({"source": [{"anything-but": "penstock"}]}, {"source": "penstock"}, False),
        ({"source": [{"anything-but": ["x", "y"]}]}, {"source": "penstock"}, True),
        ({"detail": {"state": ["FAILED"]}}, {"detail": {"state": "FAILED"}}, True),
        ({"detail": {"state": ["FAILED"]}}, {"detail": {}}, False),
        ({"region": [{"exists": False}]}, {}, True),
    ],
)
def test_pattern_matching(pattern, event, expected):
    assert pattern_matches(pattern, event) is expected


def test_unknown_pattern_operators_are_refused():
    with pytest.raises(ValueError):
        pattern_matches({"source": [{"cidr": "10.0.0.0/8"}]}, {"source": "penstock"})
