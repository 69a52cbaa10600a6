"""Every served CodePipeline operation through boto3 against `penstock serve`, each refusal
raised as boto3's modelled exception."""

import datetime

import pytest
from botocore.exceptions import ClientError

from conftest import (
    ACCOUNT_ID,
    ACCESS_KEY_ID,
    REGION,
    action_state,
    local_pipeline,
    make_client,
    open_token,
    stage,
    unique,
    wait_for,
)

UNKNOWN_ID = "0b8e8f2e-8d5c-4a5b-9d7e-2f4d6c1a9e10"


def execution_status(client, name, execution_id):
    return client.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)[
        "pipelineExecution"
    ]["status"]


def wait_for_token(client, name):
    return wait_for(
        f"the approval of {name} to open",
        lambda: open_token(client.get_pipeline_state(name=name)),
    )


def wait_for_status(client, name, execution_id, wanted):
    return wait_for(
        f"{name} {execution_id} to be {wanted}",
        lambda: execution_status(client, name, execution_id) == wanted,
    )


def test_pipelines_are_created_read_updated_tagged_listed_and_deleted(client, source_repo):
    name = unique("crud")
    declaration = local_pipeline(name, source_repo)
    created = client.create_pipeline(pipeline=declaration, tags=[{"key": "team", "value": "blue"}])
    assert created["pipeline"]["version"] == 1
    assert created["tags"] == [{"key": "team", "value": "blue"}]

    got = client.get_pipeline(name=name)
    assert [s["name"] for s in got["pipeline"]["stages"]] == ["Source", "Build", "Deploy"]
    arn = got["metadata"]["pipelineArn"]
    assert arn == f"arn:aws:codepipeline:{REGION}:{ACCOUNT_ID}:{name}"
    assert isinstance(got["metadata"]["created"], datetime.datetime)

    declaration["stages"][2]["actions"][0]["configuration"] = {"CustomData": "ship it?"}
    updated = client.update_pipeline(pipeline=declaration)
    assert updated["pipeline"]["version"] == 2
    assert client.get_pipeline(name=name)["pipeline"]["version"] == 2
    first = client.get_pipeline(name=name, version=1)["pipeline"]
    assert first["version"] == 1
    assert "configuration" not in first["stages"][2]["actions"][0]
    with pytest.raises(client.exceptions.PipelineVersionNotFoundException):
        client.get_pipeline(name=name, version=9)

    names = [
        p["name"]
        for page in client.get_paginator("list_pipelines").paginate(PaginationConfig={"PageSize": 1})
        for p in page["pipelines"]
    ]
    assert name in names
    summary = next(p for p in client.list_pipelines()["pipelines"] if p["name"] == name)
    assert summary["version"] == 2
    assert summary["pipelineType"] == "V1"
    assert summary["executionMode"] == "SUPERSEDED"

    client.tag_resource(resourceArn=arn, tags=[{"key": "tier", "value": "web"}])
    client.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert client.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "tier", "value": "web"}]

    client.delete_pipeline(name=name)
    with pytest.raises(client.exceptions.PipelineNotFoundException):
        client.get_pipeline(name=name)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.list_tags_for_resource(resourceArn=arn)


def test_bad_declarations_are_refused_with_their_exception(client, source_repo):
    name = unique("bad")
    client.create_pipeline(pipeline=local_pipeline(name, source_repo))
    with pytest.raises(client.exceptions.PipelineNameInUseException):
        client.create_pipeline(pipeline=local_pipeline(name, source_repo))

    one_stage = local_pipeline(unique("short"), source_repo)
    one_stage["stages"] = one_stage["stages"][:1]
    with pytest.raises(ClientError) as refused:
        client.create_pipeline(pipeline=one_stage)
    code = refused.value.response["Error"]["Code"]
    assert code.startswith("Invalid") and code.endswith("Exception"), code
    assert isinstance(refused.value, getattr(client.exceptions, code))

    bad_name = local_pipeline("no spaces allowed", source_repo)
    with pytest.raises(client.exceptions.ValidationException) as refused:
        client.create_pipeline(pipeline=bad_name)
    assert "pipeline.name" in str(refused.value)

    with pytest.raises(client.exceptions.InvalidTagsException):
        client.create_pipeline(
            pipeline=local_pipeline(unique("tags"), source_repo),
            tags=[{"key": "aws:reserved", "value": "x"}],
        )
    with pytest.raises(client.exceptions.PipelineNotFoundException):
        client.update_pipeline(pipeline=local_pipeline(unique("ghost"), source_repo))


def test_an_execution_waits_for_its_approval_and_finishes(client, source_repo):
    name = unique("flow")
    client.create_pipeline(pipeline=local_pipeline(name, source_repo))
    execution_id = client.start_pipeline_execution(name=name)["pipelineExecutionId"]
    token = wait_for_token(client, name)

    state = client.get_pipeline_state(name=name)
    assert state["pipelineVersion"] == 1
    assert stage(state, "Build")["latestExecution"] == {
        "pipelineExecutionId": execution_id,
        "status": "Succeeded",
        "type": "STANDARD",
    }
    checkout = action_state(state, "Source", "Checkout")["latestExecution"]
    assert checkout["status"] == "Succeeded"
    assert isinstance(checkout["lastStatusChange"], datetime.datetime)
    assert "latestExecution" not in action_state(state, "Deploy", "Publish")

    execution = client.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)[
        "pipelineExecution"
    ]
    assert execution["status"] == "InProgress"
    assert execution["trigger"] == {"triggerType": "StartPipelineExecution", "triggerDetail": ACCESS_KEY_ID}
    assert execution["executionMode"] == "SUPERSEDED"
    commit = execution["artifactRevisions"][0]["revisionId"]
    assert len(commit) == 40

    details = client.list_action_executions(
        pipelineName=name, filter={"pipelineExecutionId": execution_id}
    )["actionExecutionDetails"]
    by_action = {d["actionName"]: d for d in details}
    assert by_action["Checkout"]["output"]["outputVariables"]["CommitId"] == commit
    assert by_action["Compile"]["status"] == "Succeeded"
    assert by_action["Compile"]["input"]["inputArtifacts"][0]["name"] == "SourceOutput"
    assert by_action["Approve"]["status"] == "InProgress"

    with pytest.raises(client.exceptions.InvalidApprovalTokenException):
        client.put_approval_result(
            pipelineName=name, stageName="Deploy", actionName="Approve", token=UNKNOWN_ID,
            result={"status": "Approved", "summary": "wrong token"},
        )
    with pytest.raises(client.exceptions.StageNotFoundException):
        client.put_approval_result(
            pipelineName=name, stageName="Nope", actionName="Approve", token=token,
            result={"status": "Approved", "summary": "no stage"},
        )
    with pytest.raises(client.exceptions.ActionNotFoundException):
        client.put_approval_result(
            pipelineName=name, stageName="Deploy", actionName="Nope", token=token,
            result={"status": "Approved", "summary": "no action"},
        )
    approved = client.put_approval_result(
        pipelineName=name, stageName="Deploy", actionName="Approve", token=token,
        result={"status": "Approved", "summary": "ship it"},
    )
    assert isinstance(approved["approvedAt"], datetime.datetime)
    wait_for_status(client, name, execution_id, "Succeeded")
    with pytest.raises(client.exceptions.ApprovalAlreadyCompletedException):
        client.put_approval_result(
            pipelineName=name, stageName="Deploy", actionName="Approve", token=token,
            result={"status": "Rejected", "summary": "too late"},
        )

    summaries = client.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]
    assert summaries[0]["pipelineExecutionId"] == execution_id
    assert summaries[0]["status"] == "Succeeded"
    assert summaries[0]["sourceRevisions"][0]["revisionId"] == commit
    succeeded = client.list_pipeline_executions(
        pipelineName=name, filter={"succeededInStage": {"stageName": "Deploy"}}
    )["pipelineExecutionSummaries"]
    assert [s["pipelineExecutionId"] for s in succeeded] == [execution_id]


def test_a_disabled_transition_holds_an_execution(client, source_repo):
    name = unique("hold")
    client.create_pipeline(pipeline=local_pipeline(name, source_repo))
    client.disable_stage_transition(
        pipelineName=name, stageName="Build", transitionType="Inbound", reason="change freeze"
    )
    execution_id = client.start_pipeline_execution(name=name)["pipelineExecutionId"]

    def held():
        build = stage(client.get_pipeline_state(name=name), "Build")
        return build if build.get("inboundExecution") else None

    build = wait_for("the execution to wait in front of Build", held)
    assert build["inboundExecution"]["pipelineExecutionId"] == execution_id
    assert build["inboundTransitionState"]["enabled"] is False
    assert build["inboundTransitionState"]["disabledReason"] == "change freeze"
    assert "latestExecution" not in build

    client.enable_stage_transition(pipelineName=name, stageName="Build", transitionType="Inbound")
    wait_for_token(client, name)
    with pytest.raises(client.exceptions.StageNotFoundException):
        client.enable_stage_transition(pipelineName=name, stageName="Nope", transitionType="Inbound")


def test_a_stopped_execution_cannot_be_stopped_again(client, source_repo):
    name = unique("stop")
    client.create_pipeline(pipeline=local_pipeline(name, source_repo))
    execution_id = client.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for_token(client, name)
    stopped = client.stop_pipeline_execution(
        pipelineName=name, pipelineExecutionId=execution_id, abandon=True, reason="not this one"
    )
    assert stopped["pipelineExecutionId"] == execution_id
    wait_for_status(client, name, execution_id, "Stopped")
    with pytest.raises(
        (client.exceptions.PipelineExecutionNotStoppableException,
         client.exceptions.DuplicatedStopRequestException)
    ):
        client.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id, abandon=True)
    with pytest.raises(client.exceptions.PipelineExecutionNotFoundException):
        client.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=UNKNOWN_ID)
    summary = client.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"][0]
    assert summary["stopTrigger"] == {"reason": "not this one"}


def test_a_failed_stage_is_retried(client, source_repo, tmp_path):
    name = unique("retry")
    flag = tmp_path / "fail-the-build"
    flag.write_text("until removed")
    client.create_pipeline(pipeline=local_pipeline(name, source_repo, fail_flag=flag))
    execution_id = client.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for_status(client, name, execution_id, "Failed")
    compile_run = action_state(client.get_pipeline_state(name=name), "Build", "Compile")["latestExecution"]
    assert compile_run["status"] == "Failed"
    assert compile_run["errorDetails"]["code"]

    with pytest.raises(client.exceptions.StageNotRetryableException):
        client.retry_stage_execution(
            pipelineName=name, stageName="Source", pipelineExecutionId=execution_id,
            retryMode="FAILED_ACTIONS",
        )
    flag.unlink()
    retried = client.retry_stage_execution(
        pipelineName=name, stageName="Build", pipelineExecutionId=execution_id,
        retryMode="FAILED_ACTIONS",
    )
    assert retried["pipelineExecutionId"] == execution_id
    wait_for_token(client, name)
    build = stage(client.get_pipeline_state(name=name), "Build")
    assert build["latestExecution"]["status"] == "Succeeded"
    assert build["retryStageMetadata"]["manualStageRetryAttempt"] == 1


def test_starts_are_idempotent_and_unknown_things_are_named(client, source_repo):
    name = unique("misc")
    client.create_pipeline(pipeline=local_pipeline(name, source_repo))
    first = client.start_pipeline_execution(name=name, clientRequestToken="same-request-1")
    again = client.start_pipeline_execution(name=name, clientRequestToken="same-request-1")
    assert first["pipelineExecutionId"] == again["pipelineExecutionId"]

    with pytest.raises(client.exceptions.PipelineNotFoundException):
        client.start_pipeline_execution(name=unique("ghost"))
    with pytest.raises(client.exceptions.PipelineNotFoundException):
        client.get_pipeline_state(name=unique("ghost"))
    with pytest.raises(client.exceptions.PipelineNotFoundException):
        client.list_pipeline_executions(pipelineName=unique("ghost"))
    with pytest.raises(client.exceptions.PipelineExecutionNotFoundException):
        client.get_pipeline_execution(pipelineName=name, pipelineExecutionId=UNKNOWN_ID)
    with pytest.raises(client.exceptions.ValidationException):
        client.get_pipeline_state(name="not a valid name!")
    with pytest.raises(client.exceptions.InvalidNextTokenException):
        client.list_pipelines(nextToken="made-up")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.tag_resource(
            resourceArn=f"arn:aws:codepipeline:{REGION}:{ACCOUNT_ID}:{unique('ghost')}",
            tags=[{"key": "a", "value": "b"}],
        )


def test_requests_with_wrong_credentials_are_refused(server):
    wrong_secret = make_client(server.endpoint, secret="not-the-secret")
    with pytest.raises(ClientError) as refused:
        wrong_secret.list_pipelines()
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"

    unknown_key = make_client(server.endpoint, key="AKIAUNKNOWNKEY000000")
    with pytest.raises(ClientError) as refused:
        unknown_key.list_pipelines()
    assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"

    # A client posting to a path below the endpoint signs that path; it is served as well.
    below = make_client(server.endpoint + "/prod/api")
    assert "pipelines" in below.list_pipelines()
