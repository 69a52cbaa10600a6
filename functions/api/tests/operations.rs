//! Every served operation through the router, over the in-memory store: what it answers, and
//! each refusal with CodePipeline's exception name.

mod support;

use serde_json::{Value, json};
use support::{ACCOUNT, Harness, REGION, Script, find_action, find_stage, pipeline};

fn arn(name: &str) -> String {
    format!("arn:aws:codepipeline:{REGION}:{ACCOUNT}:{name}")
}

// ---------------------------------------------------------------------------------------
// Pipelines

#[tokio::test]
async fn a_pipeline_is_created_read_updated_listed_and_deleted() {
    let h = Harness::new();
    let created = h
        .call(
            "CreatePipeline",
            json!({ "pipeline": pipeline("web"), "tags": [{"key": "team", "value": "blue"}] }),
        )
        .await
        .ok();
    assert_eq!(created["pipeline"]["version"], 1);
    assert_eq!(created["tags"], json!([{"key": "team", "value": "blue"}]));

    let got = h.call("GetPipeline", json!({ "name": "web" })).await.ok();
    assert_eq!(got["pipeline"]["stages"].as_array().map(Vec::len), Some(3));
    assert_eq!(got["metadata"]["pipelineArn"], arn("web"));
    let created_at = got["metadata"]["created"].as_f64().unwrap();
    assert!(
        created_at > 1.6e9 && created_at < 1e10,
        "epoch seconds: {created_at}"
    );

    let mut changed = pipeline("web");
    changed["stages"][1]["actions"][0]["configuration"]["ProjectName"] = json!("web-v2");
    let updated = h
        .call("UpdatePipeline", json!({ "pipeline": changed }))
        .await
        .ok();
    assert_eq!(updated["pipeline"]["version"], 2);

    let current = h.call("GetPipeline", json!({ "name": "web" })).await.ok();
    assert_eq!(current["pipeline"]["version"], 2);
    let first = h
        .call("GetPipeline", json!({ "name": "web", "version": 1 }))
        .await
        .ok();
    assert_eq!(first["pipeline"]["version"], 1);
    assert_eq!(
        first["pipeline"]["stages"][1]["actions"][0]["configuration"]["ProjectName"],
        "web"
    );

    let listed = h.call("ListPipelines", json!({})).await.ok();
    assert_eq!(
        listed["pipelines"],
        json!([{
            "name": "web",
            "version": 2,
            "pipelineType": "V1",
            "executionMode": "SUPERSEDED",
            "created": current["metadata"]["created"],
            "updated": current["metadata"]["updated"],
        }])
    );
    assert!(listed.get("nextToken").is_none());

    h.call("DeletePipeline", json!({ "name": "web" }))
        .await
        .ok();
    h.call("GetPipeline", json!({ "name": "web" }))
        .await
        .refused("PipelineNotFoundException");
    // Deleting what is not there succeeds, as on CodePipeline.
    assert_eq!(
        h.call("DeletePipeline", json!({ "name": "web" }))
            .await
            .ok(),
        json!({})
    );
}

#[tokio::test]
async fn a_taken_name_is_in_use() {
    let h = Harness::new();
    h.create("web").await;
    h.call("CreatePipeline", json!({ "pipeline": pipeline("web") }))
        .await
        .refused("PipelineNameInUseException");
}

#[tokio::test]
async fn invalid_declarations_are_refused_with_their_exception_and_path_and_store_nothing() {
    let h = Harness::new();
    let mut one_stage = pipeline("web");
    one_stage["stages"].as_array_mut().unwrap().truncate(1);
    let reply = h
        .call("CreatePipeline", json!({ "pipeline": one_stage }))
        .await;
    assert_eq!(reply.status, 400);
    assert_ne!(reply.error_type(), "ValidationException", "{}", reply.body);
    assert!(reply.error_type().starts_with("Invalid"), "{}", reply.body);

    let mut bad_name = pipeline("web");
    bad_name["name"] = json!("no spaces allowed");
    let reply = h
        .call("CreatePipeline", json!({ "pipeline": bad_name }))
        .await;
    reply.refused("ValidationException");
    assert!(
        reply.message().contains("pipeline.name"),
        "{}",
        reply.message()
    );

    let mut unknown_member = pipeline("web");
    unknown_member["stages"][0]["actions"][0]["runOrdr"] = json!(1);
    let reply = h
        .call("CreatePipeline", json!({ "pipeline": unknown_member }))
        .await;
    reply.refused("ValidationException");
    assert!(reply.message().contains("runOrdr"), "{}", reply.message());

    h.call("CreatePipeline", json!({ "tags": [] }))
        .await
        .refused("ValidationException");
    h.call(
        "CreatePipeline",
        json!({ "pipeline": pipeline("web"), "tags": [{"key": "aws:reserved", "value": "x"}] }),
    )
    .await
    .refused("InvalidTagsException");

    let listed = h.call("ListPipelines", json!({})).await.ok();
    assert_eq!(listed["pipelines"], json!([]));
}

#[tokio::test]
async fn updating_an_unknown_pipeline_or_reading_an_unknown_version_is_refused() {
    let h = Harness::new();
    h.call("UpdatePipeline", json!({ "pipeline": pipeline("ghost") }))
        .await
        .refused("PipelineNotFoundException");
    h.create("web").await;
    h.call("GetPipeline", json!({ "name": "web", "version": 7 }))
        .await
        .refused("PipelineVersionNotFoundException");
    h.call("GetPipeline", json!({ "name": "web", "version": 0 }))
        .await
        .refused("ValidationException");
}

#[tokio::test]
async fn pipelines_are_listed_a_page_at_a_time() {
    let h = Harness::new();
    for name in ["alpha", "bravo", "charlie"] {
        h.create(name).await;
    }
    let first = h
        .call("ListPipelines", json!({ "maxResults": 2 }))
        .await
        .ok();
    let names: Vec<&str> = first["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["alpha", "bravo"]);
    let token = first["nextToken"].as_str().unwrap().to_string();
    let second = h
        .call(
            "ListPipelines",
            json!({ "maxResults": 2, "nextToken": token }),
        )
        .await
        .ok();
    assert_eq!(second["pipelines"][0]["name"], "charlie");
    assert!(second.get("nextToken").is_none());

    h.call("ListPipelines", json!({ "nextToken": "not-a-token" }))
        .await
        .refused("InvalidNextTokenException");
    h.call("ListPipelines", json!({ "maxResults": 0 }))
        .await
        .refused("ValidationException");
    h.call("ListPipelines", json!({ "maxResults": "two" }))
        .await
        .refused("SerializationException");
}

// ---------------------------------------------------------------------------------------
// Executions, state and approvals

#[tokio::test]
async fn an_execution_runs_to_its_approval_and_finishes_once_approved() {
    let h = Harness::new();
    h.create("web").await;
    let id = h.start("web").await;
    h.drive().await;

    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    assert_eq!(state["pipelineName"], "web");
    assert_eq!(state["pipelineVersion"], 1);
    assert!(state["created"].is_number() && state["updated"].is_number());
    let source = find_stage(&state, "Source");
    assert_eq!(source["inboundTransitionState"]["enabled"], true);
    assert_eq!(
        source["latestExecution"]["pipelineExecutionId"],
        id.as_str()
    );
    assert_eq!(source["latestExecution"]["status"], "Succeeded");
    let checkout = &find_action(&state, "Source", "Checkout")["latestExecution"];
    assert_eq!(checkout["status"], "Succeeded");
    assert_eq!(checkout["summary"], "Checkout ran");
    assert!(
        checkout["externalExecutionId"]
            .as_str()
            .unwrap()
            .starts_with("ext-")
    );
    assert!(checkout["lastStatusChange"].is_number());
    let deploy = find_stage(&state, "Deploy");
    assert_eq!(deploy["latestExecution"]["status"], "InProgress");
    let approve = &find_action(&state, "Deploy", "Approve")["latestExecution"];
    assert_eq!(approve["status"], "InProgress");
    // Ship waits behind the approval: not reached yet.
    assert!(
        find_action(&state, "Deploy", "Ship")
            .get("latestExecution")
            .is_none()
    );

    let execution = h
        .call(
            "GetPipelineExecution",
            json!({ "pipelineName": "web", "pipelineExecutionId": id }),
        )
        .await
        .ok();
    let e = &execution["pipelineExecution"];
    assert_eq!(e["status"], "InProgress");
    assert_eq!(e["pipelineName"], "web");
    assert_eq!(e["pipelineVersion"], 1);
    assert_eq!(e["executionMode"], "SUPERSEDED");
    assert_eq!(e["executionType"], "STANDARD");
    assert_eq!(e["trigger"]["triggerType"], "StartPipelineExecution");
    assert_eq!(
        e["artifactRevisions"],
        json!([{"name": "App", "revisionId": "rev-0001", "revisionSummary": "first revision"}])
    );

    let token = h.approval_token("web", "Deploy", "Approve").await;
    let approved = h
        .call(
            "PutApprovalResult",
            json!({
                "pipelineName": "web", "stageName": "Deploy", "actionName": "Approve",
                "token": token, "result": {"status": "Approved", "summary": "ship it"}
            }),
        )
        .await
        .ok();
    assert!(approved["approvedAt"].is_number());
    h.drive().await;
    assert_eq!(h.execution_status("web", &id).await, "Succeeded");

    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    let approve = &find_action(&state, "Deploy", "Approve")["latestExecution"];
    assert_eq!(approve["status"], "Succeeded");
    assert!(
        approve.get("token").is_none(),
        "a settled approval shows no token"
    );
}

#[tokio::test]
async fn approvals_refuse_wrong_tokens_unknown_actions_and_second_answers() {
    let h = Harness::new();
    h.create("web").await;
    h.start("web").await;
    h.drive().await;
    let token = h.approval_token("web", "Deploy", "Approve").await;
    let answer = |stage: &str, action: &str, token: &str, status: &str| {
        json!({
            "pipelineName": "web", "stageName": stage, "actionName": action, "token": token,
            "result": {"status": status, "summary": "s"}
        })
    };
    h.call(
        "PutApprovalResult",
        answer(
            "Deploy",
            "Approve",
            "00000000-0000-0000-0000-000000000000",
            "Approved",
        ),
    )
    .await
    .refused("InvalidApprovalTokenException");
    h.call(
        "PutApprovalResult",
        answer("Nope", "Approve", &token, "Approved"),
    )
    .await
    .refused("StageNotFoundException");
    h.call(
        "PutApprovalResult",
        answer("Deploy", "Nope", &token, "Approved"),
    )
    .await
    .refused("ActionNotFoundException");
    h.call(
        "PutApprovalResult",
        answer("Deploy", "Approve", "not-a-uuid", "Approved"),
    )
    .await
    .refused("ValidationException");
    h.call(
        "PutApprovalResult",
        answer("Deploy", "Approve", &token, "Maybe"),
    )
    .await
    .refused("ValidationException");
    let mut missing = answer("Deploy", "Approve", &token, "Approved");
    missing["pipelineName"] = json!("ghost");
    h.call("PutApprovalResult", missing)
        .await
        .refused("PipelineNotFoundException");

    h.call(
        "PutApprovalResult",
        answer("Deploy", "Approve", &token, "Rejected"),
    )
    .await
    .ok();
    let second = h
        .call(
            "PutApprovalResult",
            answer("Deploy", "Approve", &token, "Approved"),
        )
        .await;
    let error_type = second.error_type();
    assert!(
        error_type == "ApprovalAlreadyCompletedException"
            || error_type == "InvalidApprovalTokenException",
        "{}",
        second.body
    );
    h.drive().await;
    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    let approve = &find_action(&state, "Deploy", "Approve")["latestExecution"];
    assert_eq!(approve["status"], "Failed");
    assert!(approve["errorDetails"]["code"].is_string());
}

#[tokio::test]
async fn starting_is_idempotent_per_client_request_token_and_needs_the_pipeline() {
    let h = Harness::new();
    h.create("web").await;
    let input = json!({ "name": "web", "clientRequestToken": "retry-1" });
    let first = h.call("StartPipelineExecution", input.clone()).await.ok();
    let again = h.call("StartPipelineExecution", input).await.ok();
    assert_eq!(first["pipelineExecutionId"], again["pipelineExecutionId"]);
    let listed = h
        .call("ListPipelineExecutions", json!({ "pipelineName": "web" }))
        .await
        .ok();
    assert_eq!(
        listed["pipelineExecutionSummaries"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    h.call("StartPipelineExecution", json!({ "name": "ghost" }))
        .await
        .refused("PipelineNotFoundException");
    h.call("StartPipelineExecution", json!({}))
        .await
        .refused("ValidationException");
    h.call(
        "StartPipelineExecution",
        json!({ "name": "web", "clientRequestToken": "has spaces" }),
    )
    .await
    .refused("ValidationException");
    h.call(
        "StartPipelineExecution",
        json!({ "name": "web", "variables": [{"name": "bad name!", "value": "x"}] }),
    )
    .await
    .refused("ValidationException");
}

#[tokio::test]
async fn a_start_carries_its_variables_and_pinned_source_revisions() {
    let h = Harness::new();
    let mut declaration = pipeline("web");
    declaration["pipelineType"] = json!("V2");
    declaration["variables"] = json!([{"name": "Env", "defaultValue": "dev"}]);
    h.call("CreatePipeline", json!({ "pipeline": declaration }))
        .await
        .ok();
    h.script("Checkout", Script::Hold);
    let started = h
        .call(
            "StartPipelineExecution",
            json!({
                "name": "web",
                "variables": [{"name": "Env", "value": "prod"}],
                "sourceRevisions": [{
                    "actionName": "Checkout",
                    "revisionType": "S3_OBJECT_VERSION_ID",
                    "revisionValue": "v-7"
                }]
            }),
        )
        .await
        .ok();
    let id = started["pipelineExecutionId"].as_str().unwrap().to_string();
    h.drive().await;
    let execution = h
        .call(
            "GetPipelineExecution",
            json!({ "pipelineName": "web", "pipelineExecutionId": id }),
        )
        .await
        .ok();
    assert_eq!(
        execution["pipelineExecution"]["variables"],
        json!([{"name": "Env", "resolvedValue": "prod"}])
    );
    let listed = h
        .call("ListPipelineExecutions", json!({ "pipelineName": "web" }))
        .await
        .ok();
    assert_eq!(
        listed["pipelineExecutionSummaries"][0]["sourceRevisions"],
        json!([{"actionName": "Checkout", "revisionId": "v-7"}])
    );
    h.call(
        "StartPipelineExecution",
        json!({ "name": "web", "variables": [{"name": "Env", "value": "a"}, {"name": "Env", "value": "b"}] }),
    )
    .await
    .refused("ValidationException");
    h.call(
        "StartPipelineExecution",
        json!({ "name": "web", "sourceRevisions": [{
            "actionName": "Checkout", "revisionType": "BRANCH", "revisionValue": "main"
        }] }),
    )
    .await
    .refused("ValidationException");
}

#[tokio::test]
async fn reading_unknown_executions_says_what_is_missing() {
    let h = Harness::new();
    h.create("web").await;
    let unknown = "0b8e8f2e-8d5c-4a5b-9d7e-2f4d6c1a9e10";
    h.call(
        "GetPipelineExecution",
        json!({ "pipelineName": "web", "pipelineExecutionId": unknown }),
    )
    .await
    .refused("PipelineExecutionNotFoundException");
    h.call(
        "GetPipelineExecution",
        json!({ "pipelineName": "ghost", "pipelineExecutionId": unknown }),
    )
    .await
    .refused("PipelineNotFoundException");
    h.call(
        "GetPipelineExecution",
        json!({ "pipelineName": "web", "pipelineExecutionId": "not-an-id" }),
    )
    .await
    .refused("ValidationException");
    h.call("GetPipelineState", json!({ "name": "ghost" }))
        .await
        .refused("PipelineNotFoundException");
    h.call("ListPipelineExecutions", json!({ "pipelineName": "ghost" }))
        .await
        .refused("PipelineNotFoundException");
    h.call("ListActionExecutions", json!({ "pipelineName": "ghost" }))
        .await
        .refused("PipelineNotFoundException");
    h.call(
        "ListActionExecutions",
        json!({ "pipelineName": "web", "filter": {"pipelineExecutionId": unknown} }),
    )
    .await
    .refused("PipelineExecutionNotFoundException");
}

#[tokio::test]
async fn executions_are_listed_newest_first_a_page_at_a_time_and_filtered_by_stage() {
    let h = Harness::new();
    let mut parallel = pipeline("web");
    parallel["pipelineType"] = json!("V2");
    parallel["executionMode"] = json!("PARALLEL");
    h.call("CreatePipeline", json!({ "pipeline": parallel }))
        .await
        .ok();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(h.start("web").await);
        h.drive().await;
    }
    let first = h
        .call(
            "ListPipelineExecutions",
            json!({ "pipelineName": "web", "maxResults": 2 }),
        )
        .await
        .ok();
    let summaries = first["pipelineExecutionSummaries"].as_array().unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0]["pipelineExecutionId"], ids[2].as_str());
    assert_eq!(summaries[1]["pipelineExecutionId"], ids[1].as_str());
    let summary = &summaries[0];
    assert_eq!(summary["status"], "InProgress");
    assert_eq!(summary["executionMode"], "PARALLEL");
    assert!(summary["startTime"].is_number() && summary["lastUpdateTime"].is_number());
    assert_eq!(
        summary["sourceRevisions"],
        json!([{"actionName": "Checkout", "revisionId": "rev-0001", "revisionSummary": "first revision"}])
    );
    let token = first["nextToken"].as_str().unwrap();
    let second = h
        .call(
            "ListPipelineExecutions",
            json!({ "pipelineName": "web", "maxResults": 2, "nextToken": token }),
        )
        .await
        .ok();
    assert_eq!(
        second["pipelineExecutionSummaries"][0]["pipelineExecutionId"],
        ids[0].as_str()
    );
    assert!(second.get("nextToken").is_none());

    // Approve only the oldest: it alone succeeds in Deploy. (PARALLEL mode has no state
    // view; the scripted dispatcher's token is read from the runtime document.)
    let state = h.control.runtime("web").await.unwrap().value.state;
    let token = state.executions[&ids[0]].stages[2].actions[0]
        .token
        .clone()
        .unwrap();
    h.call(
        "PutApprovalResult",
        json!({
            "pipelineName": "web", "stageName": "Deploy", "actionName": "Approve", "token": token,
            "result": {"status": "Approved", "summary": "ok"}
        }),
    )
    .await
    .ok();
    h.drive().await;
    let filtered = h
        .call(
            "ListPipelineExecutions",
            json!({
                "pipelineName": "web",
                "maxResults": 1,
                "filter": {"succeededInStage": {"stageName": "Deploy"}}
            }),
        )
        .await
        .ok();
    let found = filtered["pipelineExecutionSummaries"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["pipelineExecutionId"], ids[0].as_str());
    assert_eq!(found[0]["status"], "Succeeded");
    let all_build = h
        .call(
            "ListPipelineExecutions",
            json!({ "pipelineName": "web", "filter": {"succeededInStage": {"stageName": "Build"}} }),
        )
        .await
        .ok();
    assert_eq!(
        all_build["pipelineExecutionSummaries"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn action_executions_show_inputs_outputs_and_page_across_executions() {
    let h = Harness::new();
    h.create("web").await;
    let id = h.start("web").await;
    h.drive().await;
    let listed = h
        .call(
            "ListActionExecutions",
            json!({ "pipelineName": "web", "filter": {"pipelineExecutionId": id} }),
        )
        .await
        .ok();
    let details = listed["actionExecutionDetails"].as_array().unwrap();
    let names: Vec<&str> = details
        .iter()
        .filter_map(|d| d["actionName"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for expected in ["Checkout", "Compile", "Approve"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let compile = details
        .iter()
        .find(|d| d["actionName"] == "Compile")
        .unwrap();
    assert_eq!(compile["pipelineExecutionId"], id.as_str());
    assert_eq!(compile["stageName"], "Build");
    assert_eq!(compile["pipelineVersion"], 1);
    assert_eq!(compile["status"], "Succeeded");
    assert_eq!(
        compile["input"]["actionTypeId"],
        json!({"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"})
    );
    assert_eq!(
        compile["input"]["configuration"],
        json!({"ProjectName": "web"})
    );
    assert_eq!(
        compile["input"]["resolvedConfiguration"]["ProjectName"],
        "web"
    );
    assert_eq!(compile["input"]["inputArtifacts"][0]["name"], "App");
    assert_eq!(
        compile["input"]["inputArtifacts"][0]["s3location"]["bucket"],
        "artifacts-bucket"
    );
    assert_eq!(compile["output"]["outputArtifacts"][0]["name"], "Bin");
    assert_eq!(compile["output"]["outputVariables"], json!({"Done": "yes"}));
    assert_eq!(
        compile["output"]["executionResult"]["externalExecutionSummary"],
        "Compile ran"
    );

    // A second execution, then every detail one per page, across both executions.
    h.start("web").await;
    h.drive().await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..20 {
        let mut input = json!({ "pipelineName": "web", "maxResults": 1 });
        if let Some(t) = &token {
            input["nextToken"] = json!(t);
        }
        let page = h.call("ListActionExecutions", input).await.ok();
        for d in page["actionExecutionDetails"].as_array().unwrap() {
            seen.push(d["actionExecutionId"].as_str().unwrap().to_string());
        }
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let whole = h
        .call("ListActionExecutions", json!({ "pipelineName": "web" }))
        .await
        .ok();
    let all: Vec<String> = whole["actionExecutionDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["actionExecutionId"].as_str().unwrap().to_string())
        .collect();
    // The second execution waits in front of Deploy, which the first holds: 3 + 2 attempts.
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(
        seen, all,
        "paging one at a time lists the same details in the same order"
    );
}

#[tokio::test]
async fn a_stop_is_recorded_once_and_reported() {
    let h = Harness::new();
    h.create("web").await;
    h.script("Compile", Script::Hold);
    let id = h.start("web").await;
    h.drive().await;
    let stop = json!({
        "pipelineName": "web", "pipelineExecutionId": id, "reason": "wrong branch"
    });
    let stopped = h.call("StopPipelineExecution", stop.clone()).await.ok();
    assert_eq!(stopped["pipelineExecutionId"], id.as_str());
    assert_eq!(h.execution_status("web", &id).await, "Stopping");
    h.call("StopPipelineExecution", stop)
        .await
        .refused("DuplicatedStopRequestException");
    let listed = h
        .call("ListPipelineExecutions", json!({ "pipelineName": "web" }))
        .await
        .ok();
    assert_eq!(
        listed["pipelineExecutionSummaries"][0]["stopTrigger"],
        json!({"reason": "wrong branch"})
    );
    // Abandoning ends it at once.
    h.call(
        "StopPipelineExecution",
        json!({ "pipelineName": "web", "pipelineExecutionId": id, "abandon": true }),
    )
    .await
    .ok();
    h.drive().await;
    assert_eq!(h.execution_status("web", &id).await, "Stopped");
    h.call(
        "StopPipelineExecution",
        json!({ "pipelineName": "web", "pipelineExecutionId": id, "abandon": true }),
    )
    .await
    .refused("PipelineExecutionNotStoppableException");
    h.call(
        "StopPipelineExecution",
        json!({
            "pipelineName": "web",
            "pipelineExecutionId": "0b8e8f2e-8d5c-4a5b-9d7e-2f4d6c1a9e10"
        }),
    )
    .await
    .refused("PipelineExecutionNotFoundException");
    h.call(
        "StopPipelineExecution",
        json!({ "pipelineName": "ghost", "pipelineExecutionId": id }),
    )
    .await
    .refused("PipelineNotFoundException");
}

#[tokio::test]
async fn a_disabled_transition_holds_executions_until_enabled() {
    let h = Harness::new();
    h.create("web").await;
    h.call(
        "DisableStageTransition",
        json!({
            "pipelineName": "web", "stageName": "Build", "transitionType": "Inbound",
            "reason": "change freeze"
        }),
    )
    .await
    .ok();
    let id = h.start("web").await;
    h.drive().await;
    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    let build = find_stage(&state, "Build");
    assert_eq!(build["inboundTransitionState"]["enabled"], false);
    assert_eq!(
        build["inboundTransitionState"]["disabledReason"],
        "change freeze"
    );
    assert!(build["inboundTransitionState"]["lastChangedAt"].is_number());
    assert_eq!(
        build["inboundExecution"]["pipelineExecutionId"],
        id.as_str()
    );
    assert_eq!(build["inboundExecution"]["status"], "InProgress");
    assert!(build.get("latestExecution").is_none());

    h.call(
        "EnableStageTransition",
        json!({ "pipelineName": "web", "stageName": "Build", "transitionType": "Inbound" }),
    )
    .await
    .ok();
    h.drive().await;
    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    let build = find_stage(&state, "Build");
    assert_eq!(build["inboundTransitionState"]["enabled"], true);
    assert_eq!(build["latestExecution"]["status"], "Succeeded");
    assert!(build.get("inboundExecution").is_none());
}

#[tokio::test]
async fn an_outbound_transition_is_the_next_stages_inbound_one() {
    let h = Harness::new();
    h.create("web").await;
    h.call(
        "DisableStageTransition",
        json!({
            "pipelineName": "web", "stageName": "Source", "transitionType": "Outbound",
            "reason": "hold"
        }),
    )
    .await
    .ok();
    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    assert_eq!(
        find_stage(&state, "Build")["inboundTransitionState"]["enabled"],
        false
    );
    assert_eq!(
        find_stage(&state, "Source")["inboundTransitionState"]["enabled"],
        true
    );
    h.call(
        "EnableStageTransition",
        json!({ "pipelineName": "web", "stageName": "Deploy", "transitionType": "Outbound" }),
    )
    .await
    .refused("ValidationException");
}

#[tokio::test]
async fn transitions_refuse_unknown_stages_bad_types_and_missing_reasons() {
    let h = Harness::new();
    h.create("web").await;
    h.call(
        "DisableStageTransition",
        json!({ "pipelineName": "web", "stageName": "Nope", "transitionType": "Inbound", "reason": "x" }),
    )
    .await
    .refused("StageNotFoundException");
    h.call(
        "EnableStageTransition",
        json!({ "pipelineName": "web", "stageName": "Build", "transitionType": "Sideways" }),
    )
    .await
    .refused("ValidationException");
    h.call(
        "DisableStageTransition",
        json!({ "pipelineName": "web", "stageName": "Build", "transitionType": "Inbound" }),
    )
    .await
    .refused("ValidationException");
    h.call(
        "DisableStageTransition",
        json!({ "pipelineName": "web", "stageName": "Build", "transitionType": "Inbound", "reason": "semi;colon" }),
    )
    .await
    .refused("ValidationException");
    h.call(
        "EnableStageTransition",
        json!({ "pipelineName": "ghost", "stageName": "Build", "transitionType": "Inbound" }),
    )
    .await
    .refused("PipelineNotFoundException");
    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    assert_eq!(
        find_stage(&state, "Build")["inboundTransitionState"]["enabled"],
        true
    );
}

#[tokio::test]
async fn a_failed_stage_is_retried_in_the_same_execution() {
    let h = Harness::new();
    h.create("web").await;
    h.script("Compile", Script::Fail);
    let id = h.start("web").await;
    h.drive().await;
    assert_eq!(h.execution_status("web", &id).await, "Failed");
    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    let compile = &find_action(&state, "Build", "Compile")["latestExecution"];
    assert_eq!(compile["status"], "Failed");
    assert_eq!(compile["errorDetails"]["code"], "JobFailed");
    assert_eq!(compile["errorDetails"]["message"], "Compile failed");

    h.call(
        "RetryStageExecution",
        json!({
            "pipelineName": "web", "stageName": "Source", "pipelineExecutionId": id,
            "retryMode": "FAILED_ACTIONS"
        }),
    )
    .await
    .refused("StageNotRetryableException");

    h.script("Compile", Script::Succeed);
    let retried = h
        .call(
            "RetryStageExecution",
            json!({
                "pipelineName": "web", "stageName": "Build", "pipelineExecutionId": id,
                "retryMode": "FAILED_ACTIONS"
            }),
        )
        .await
        .ok();
    assert_eq!(retried["pipelineExecutionId"], id.as_str());
    h.drive().await;
    assert_eq!(h.execution_status("web", &id).await, "InProgress");
    let state = h
        .call("GetPipelineState", json!({ "name": "web" }))
        .await
        .ok();
    let build = find_stage(&state, "Build");
    assert_eq!(build["latestExecution"]["status"], "Succeeded");
    assert_eq!(build["retryStageMetadata"]["manualStageRetryAttempt"], 1);
    // Both attempts of Compile are listed.
    let listed = h
        .call(
            "ListActionExecutions",
            json!({ "pipelineName": "web", "filter": {"pipelineExecutionId": id} }),
        )
        .await
        .ok();
    let compiles: Vec<&Value> = listed["actionExecutionDetails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["actionName"] == "Compile")
        .collect();
    assert_eq!(compiles.len(), 2);
    assert_eq!(compiles[0]["status"], "Succeeded");
    assert_eq!(compiles[1]["status"], "Failed");

    h.call(
        "RetryStageExecution",
        json!({
            "pipelineName": "web", "stageName": "Build", "pipelineExecutionId": id,
            "retryMode": "SOME_ACTIONS"
        }),
    )
    .await
    .refused("ValidationException");
    h.call(
        "RetryStageExecution",
        json!({
            "pipelineName": "web", "stageName": "Nope", "pipelineExecutionId": id,
            "retryMode": "ALL_ACTIONS"
        }),
    )
    .await
    .refused("StageNotFoundException");
}

// ---------------------------------------------------------------------------------------
// Tags

#[tokio::test]
async fn tags_are_added_replaced_listed_and_removed_by_pipeline_arn() {
    let h = Harness::new();
    h.create("web").await;
    let resource = arn("web");
    h.call(
        "TagResource",
        json!({ "resourceArn": resource, "tags": [
            {"key": "team", "value": "blue"}, {"key": "tier", "value": "web"}
        ]}),
    )
    .await
    .ok();
    h.call(
        "TagResource",
        json!({ "resourceArn": resource, "tags": [{"key": "team", "value": "green"}] }),
    )
    .await
    .ok();
    let listed = h
        .call("ListTagsForResource", json!({ "resourceArn": resource }))
        .await
        .ok();
    assert_eq!(
        listed["tags"],
        json!([{"key": "team", "value": "green"}, {"key": "tier", "value": "web"}])
    );
    let page = h
        .call(
            "ListTagsForResource",
            json!({ "resourceArn": resource, "maxResults": 1 }),
        )
        .await
        .ok();
    assert_eq!(page["tags"], json!([{"key": "team", "value": "green"}]));
    let rest = h
        .call(
            "ListTagsForResource",
            json!({ "resourceArn": resource, "maxResults": 1, "nextToken": page["nextToken"] }),
        )
        .await
        .ok();
    assert_eq!(rest["tags"], json!([{"key": "tier", "value": "web"}]));
    assert!(rest.get("nextToken").is_none());

    h.call(
        "UntagResource",
        json!({ "resourceArn": resource, "tagKeys": ["team", "absent"] }),
    )
    .await
    .ok();
    let listed = h
        .call("ListTagsForResource", json!({ "resourceArn": resource }))
        .await
        .ok();
    assert_eq!(listed["tags"], json!([{"key": "tier", "value": "web"}]));
    // The declaration is untouched by tagging.
    let got = h.call("GetPipeline", json!({ "name": "web" })).await.ok();
    assert_eq!(got["pipeline"]["version"], 1);
}

#[tokio::test]
async fn tagging_refuses_foreign_unknown_or_reserved_targets() {
    let h = Harness::new();
    h.create("web").await;
    h.call(
        "TagResource",
        json!({ "resourceArn": arn("ghost"), "tags": [{"key": "a", "value": "b"}] }),
    )
    .await
    .refused("ResourceNotFoundException");
    h.call(
        "TagResource",
        json!({
            "resourceArn": "arn:aws:codepipeline:eu-west-3:123456789012:web",
            "tags": [{"key": "a", "value": "b"}]
        }),
    )
    .await
    .refused("ResourceNotFoundException");
    h.call(
        "ListTagsForResource",
        json!({ "resourceArn": "arn:aws:s3:::bucket" }),
    )
    .await
    .refused("ValidationException");
    h.call(
        "TagResource",
        json!({ "resourceArn": arn("web"), "tags": [{"key": "aws:x", "value": "b"}] }),
    )
    .await
    .refused("InvalidTagsException");
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    let reply = h
        .call(
            "TagResource",
            json!({ "resourceArn": arn("web"), "tags": many }),
        )
        .await;
    let error_type = reply.error_type();
    assert!(
        error_type == "TooManyTagsException" || error_type == "ValidationException",
        "{}",
        reply.body
    );
    let listed = h
        .call("ListTagsForResource", json!({ "resourceArn": arn("web") }))
        .await
        .ok();
    assert_eq!(listed["tags"], json!([]));
}
