"""The complete example pipeline from CodePipeline's reference document, verbatim, through the
`aws` CLI: create-pipeline --cli-input-json, get-pipeline, start-pipeline-execution,
get-pipeline-state until it finishes, list-pipeline-executions.

Its GitHub source is served by a loopback stand-in for the GitHub REST API (commit lookup and
zipball from a real git repository); its CodeBuild action has no ProjectName and runs the
repository's buildspec.yml locally; its CodeDeploy action runs on AWS only, so on the embedded
default the execution must end Failed at that action with a clear ProviderNotSupported error,
never skipped."""

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, Server, wait_for

REFERENCE = {
    "pipeline": {
        "name": "MyWebAppPipeline",
        "roleArn": "arn:aws:iam::111111111111:role/CodePipelineRole",
        "artifactStore": {"type": "S3", "location": "my-pipeline-artifacts"},
        "stages": [
            {"name": "Source", "actions": [{
                "name": "SourceAction",
                "actionTypeId": {"category": "Source", "owner": "ThirdParty", "provider": "GitHub", "version": "1"},
                "configuration": {"Owner": "myusername", "Repo": "my-app", "Branch": "main"},
                "outputArtifacts": [{"name": "SourceOutput"}],
            }]},
            {"name": "Build", "actions": [{
                "name": "BuildAction",
                "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "inputArtifacts": [{"name": "SourceOutput"}],
                "outputArtifacts": [{"name": "BuildOutput"}],
            }]},
            {"name": "Deploy", "actions": [{
                "name": "DeployAction",
                "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "CodeDeploy", "version": "1"},
                "inputArtifacts": [{"name": "BuildOutput"}],
                "configuration": {"ApplicationName": "MyApp", "DeploymentGroupName": "Production"},
            }]},
        ],
    }
}


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", *args], cwd=repo, check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


class FakeGitHub:
    """Answers the REST calls the GitHub source makes, from a real repository."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] != ["repos", "myusername", "my-app"]:
                    return self.answer(404, b'{"message": "Not Found"}')
                if parts[3:4] == ["commits"] and len(parts) == 5:
                    sha = git(outer.repo, "rev-parse", parts[4])
                    body = {
                        "sha": sha,
                        "commit": {
                            "message": git(outer.repo, "log", "-1", "--format=%B", sha),
                            "author": {"name": "t", "email": "t@example.com",
                                       "date": git(outer.repo, "log", "-1", "--format=%aI", sha)},
                        },
                        "html_url": f"https://github.example/myusername/my-app/commit/{sha}",
                    }
                    return self.answer(200, json.dumps(body).encode())
                if parts[3:4] == ["commits"] and parts[5:6] == ["branches-where-head"]:
                    return self.answer(200, json.dumps([{"name": "main"}]).encode())
                if parts[3:4] == ["zipball"] and len(parts) == 5:
                    sha = parts[4]
                    archive = subprocess.run(
                        ["git", "archive", "--format=zip", f"--prefix=myusername-my-app-{sha[:7]}/", sha],
                        cwd=outer.repo, check=True, capture_output=True).stdout
                    return self.answer(200, archive, "application/zip")
                return self.answer(404, b'{"message": "Not Found"}')

            def do_POST(self):
                outer.requests.append("POST " + self.path)
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                self.answer(201, b"{}")

            def answer(self, code, body, content_type="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("my-app")
    (repo / "index.html").write_text("<h1>my app</h1>\n")
    (repo / "buildspec.yml").write_text(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p out && cp index.html out/\n"
        "artifacts:\n  base-directory: out\n  files:\n    - '**/*'\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "my app")
    return repo


@pytest.fixture(scope="module")
def github(app_repo):
    fake = FakeGitHub(app_repo)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory, github):
    saved = dict(os.environ)
    os.environ["PENSTOCK_GITHUB_API_URL"] = github.url
    os.environ["PENSTOCK_GITHUB_TOKEN"] = "test-token-not-a-secret"
    try:
        server = Server(tmp_path_factory.mktemp("reference-data"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield server
    server.stop()


def aws(server, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
               AWS_DEFAULT_REGION=REGION)
    env.pop("AWS_PROFILE", None)
    result = subprocess.run(
        ["aws", "codepipeline", *args, "--endpoint-url", server.endpoint, "--output", "json"],
        env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_the_reference_example_runs_until_its_unsupported_deploy(reference_server, github, app_repo, tmp_path):
    spec = tmp_path / "reference.json"
    spec.write_text(json.dumps(REFERENCE))
    created = aws(reference_server, "create-pipeline", "--cli-input-json", f"file://{spec}")
    assert created["pipeline"]["name"] == "MyWebAppPipeline"
    assert created["pipeline"]["version"] == 1

    fetched = aws(reference_server, "get-pipeline", "--name", "MyWebAppPipeline")
    assert [s["name"] for s in fetched["pipeline"]["stages"]] == ["Source", "Build", "Deploy"]

    started = aws(reference_server, "start-pipeline-execution", "--name", "MyWebAppPipeline")
    execution_id = started["pipelineExecutionId"]

    def deploy_finished():
        state = aws(reference_server, "get-pipeline-state", "--name", "MyWebAppPipeline")
        deploy = next(s for s in state["stageStates"] if s["stageName"] == "Deploy")
        latest = deploy.get("latestExecution", {})
        return state if latest.get("pipelineExecutionId") == execution_id and latest.get("status") == "Failed" else None

    state = wait_for("the Deploy stage to fail", deploy_finished)
    stages = {s["stageName"]: s for s in state["stageStates"]}
    assert stages["Source"]["latestExecution"]["status"] == "Succeeded"
    assert stages["Build"]["latestExecution"]["status"] == "Succeeded"
    action = stages["Deploy"]["actionStates"][0]["latestExecution"]
    assert action["status"] == "Failed"
    assert action["errorDetails"]["code"] == "ProviderNotSupported"
    assert "CodeDeploy" in action["errorDetails"]["message"]

    head = git(app_repo, "rev-parse", "HEAD")
    assert any(path.endswith(f"/zipball/{head}") for path in github.requests), github.requests

    executions = aws(reference_server, "list-pipeline-executions", "--pipeline-name", "MyWebAppPipeline")
    summary = executions["pipelineExecutionSummaries"][0]
    assert summary["pipelineExecutionId"] == execution_id
    assert summary["status"] == "Failed"
    revisions = {r["actionName"]: r["revisionId"] for r in summary.get("sourceRevisions", [])}
    assert revisions.get("SourceAction") == head
