"""The everyday `aws codepipeline` commands (AWS CLI v1) against `penstock serve`, errors
included: what users type against CodePipeline works unchanged with `--endpoint-url`."""

import json
import os
import subprocess

import pytest

from conftest import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    local_pipeline,
    open_token,
    stage,
    unique,
    wait_for,
)


@pytest.fixture(scope="module")
def aws(server, tmp_path_factory):
    """Run `aws codepipeline ...` against the server; returns the parsed JSON output, or the
    completed process when `check` is False."""
    home = tmp_path_factory.mktemp("aws-home")
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        AWS_DEFAULT_REGION=REGION,
        # Nothing from the machine's own AWS configuration takes part.
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_PAGER="",
        HOME=str(home),
    )
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)

    def run(*args, check=True):
        completed = subprocess.run(
            ["aws", "codepipeline", *args, "--endpoint-url", server.endpoint, "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if not check:
            return completed
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout) if completed.stdout.strip() else {}

    return run


def refused_with(completed, exception):
    """The CLI failed and named the exception as it does for AWS."""
    assert completed.returncode != 0, completed.stdout
    assert f"An error occurred ({exception})" in completed.stderr, completed.stderr


def test_a_pipeline_goes_from_create_to_an_approved_execution(aws, source_repo, tmp_path):
    name = unique("cli")
    input_file = tmp_path / "pipeline.json"
    input_file.write_text(json.dumps({"pipeline": local_pipeline(name, source_repo)}))
    created = aws("create-pipeline", "--cli-input-json", f"file://{input_file}")
    assert created["pipeline"]["name"] == name

    got = aws("get-pipeline", "--name", name)
    assert got["pipeline"]["version"] == 1
    assert got["metadata"]["pipelineArn"].endswith(f":{name}")

    execution_id = aws("start-pipeline-execution", "--name", name)["pipelineExecutionId"]
    token = wait_for(
        "the approval to open",
        lambda: open_token(aws("get-pipeline-state", "--name", name)),
    )
    listed = aws("list-pipeline-executions", "--pipeline-name", name)
    assert listed["pipelineExecutionSummaries"][0]["pipelineExecutionId"] == execution_id
    assert listed["pipelineExecutionSummaries"][0]["status"] == "InProgress"

    refused_with(
        aws(
            "put-approval-result", "--pipeline-name", name, "--stage-name", "Deploy",
            "--action-name", "Approve", "--result", "summary=nope,status=Approved",
            "--token", "0b8e8f2e-8d5c-4a5b-9d7e-2f4d6c1a9e10", check=False,
        ),
        "InvalidApprovalTokenException",
    )
    approved = aws(
        "put-approval-result", "--pipeline-name", name, "--stage-name", "Deploy",
        "--action-name", "Approve", "--result", "summary=looks good,status=Approved",
        "--token", token,
    )
    assert "approvedAt" in approved
    wait_for(
        "the execution to succeed",
        lambda: aws(
            "get-pipeline-execution", "--pipeline-name", name, "--pipeline-execution-id", execution_id
        )["pipelineExecution"]["status"]
        == "Succeeded",
    )
    details = aws("list-action-executions", "--pipeline-name", name)["actionExecutionDetails"]
    assert {d["actionName"] for d in details} == {"Checkout", "Compile", "Approve", "Publish"}


def test_a_disabled_transition_holds_an_execution_until_enabled(aws, source_repo):
    name = unique("cli-hold")
    aws("create-pipeline", "--pipeline", json.dumps(local_pipeline(name, source_repo)))
    aws(
        "disable-stage-transition", "--pipeline-name", name, "--stage-name", "Build",
        "--transition-type", "Inbound", "--reason", "release freeze",
    )
    execution_id = aws("start-pipeline-execution", "--name", name)["pipelineExecutionId"]
    build = wait_for(
        "the execution to wait in front of Build",
        lambda: (lambda b: b if b.get("inboundExecution") else None)(
            stage(aws("get-pipeline-state", "--name", name), "Build")
        ),
    )
    assert build["inboundExecution"]["pipelineExecutionId"] == execution_id
    assert build["inboundTransitionState"]["enabled"] is False
    aws(
        "enable-stage-transition", "--pipeline-name", name, "--stage-name", "Build",
        "--transition-type", "Inbound",
    )
    wait_for("the approval to open", lambda: open_token(aws("get-pipeline-state", "--name", name)))


def test_a_failed_stage_is_retried_from_the_cli(aws, source_repo, tmp_path):
    name = unique("cli-retry")
    flag = tmp_path / "fail-the-build"
    flag.write_text("until removed")
    aws("create-pipeline", "--pipeline", json.dumps(local_pipeline(name, source_repo, fail_flag=flag)))
    execution_id = aws("start-pipeline-execution", "--name", name)["pipelineExecutionId"]
    wait_for(
        "the build to fail",
        lambda: aws(
            "get-pipeline-execution", "--pipeline-name", name, "--pipeline-execution-id", execution_id
        )["pipelineExecution"]["status"]
        == "Failed",
    )
    flag.unlink()
    retried = aws(
        "retry-stage-execution", "--pipeline-name", name, "--stage-name", "Build",
        "--pipeline-execution-id", execution_id, "--retry-mode", "FAILED_ACTIONS",
    )
    assert retried["pipelineExecutionId"] == execution_id
    wait_for("the approval to open", lambda: open_token(aws("get-pipeline-state", "--name", name)))


def test_errors_name_codepipelines_exceptions(aws, source_repo):
    refused_with(aws("get-pipeline", "--name", unique("ghost"), check=False), "PipelineNotFoundException")
    refused_with(
        aws("start-pipeline-execution", "--name", unique("ghost"), check=False),
        "PipelineNotFoundException",
    )
    refused_with(
        aws("get-pipeline-state", "--name", "not valid!", check=False), "ValidationException"
    )
    name = unique("cli-errors")
    aws("create-pipeline", "--pipeline", json.dumps(local_pipeline(name, source_repo)))
    refused_with(
        aws("create-pipeline", "--pipeline", json.dumps(local_pipeline(name, source_repo)), check=False),
        "PipelineNameInUseException",
    )
    refused_with(
        aws(
            "disable-stage-transition", "--pipeline-name", name, "--stage-name", "Nope",
            "--transition-type", "Inbound", "--reason", "x", check=False,
        ),
        "StageNotFoundException",
    )
    refused_with(
        aws(
            "get-pipeline-execution", "--pipeline-name", name,
            "--pipeline-execution-id", "0b8e8f2e-8d5c-4a5b-9d7e-2f4d6c1a9e10", check=False,
        ),
        "PipelineExecutionNotFoundException",
    )
