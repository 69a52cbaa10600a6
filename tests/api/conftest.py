"""Real clients against the real server: `penstock serve` on a temporary data directory and a
loopback port, driven by boto3 and the `aws` CLI exactly as users drive CodePipeline."""

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ACCESS_KEY_ID = "AKIAPENSTOCKPYTEST01"
SECRET_ACCESS_KEY = "penstock/python+test=secret"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"

REPO_ROOT = Path(__file__).resolve().parents[2]


def penstock_binary() -> Path:
    """The `penstock` binary: $PENSTOCK_BIN, else the one cargo built for this checkout."""
    explicit = os.environ.get("PENSTOCK_BIN")
    if explicit:
        return Path(explicit)
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    binary = Path(json.loads(metadata.stdout)["target_directory"]) / "debug" / "penstock"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run `cargo build -p penstock` first")
    return binary


class Server:
    """A running `penstock serve` and the address of its API."""

    def __init__(self, data_dir: Path):
        env = dict(os.environ)
        env.update(
            PENSTOCK_ACCESS_KEY_ID=ACCESS_KEY_ID,
            PENSTOCK_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
            PENSTOCK_REGION=REGION,
            PENSTOCK_ACCOUNT_ID=ACCOUNT_ID,
        )
        self.process = subprocess.Popen(
            [str(penstock_binary()), "--data-dir", str(data_dir), "serve", "--listen", "127.0.0.1:0"],
            cwd=data_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = []
        self.endpoint = self._wait_for_endpoint()

    def _wait_for_endpoint(self) -> str:
        lines: "queue.Queue[str]" = queue.Queue()

        def pump():
            for line in self.process.stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line == "":
                break
            self.output.append(line)
            marker = "CodePipeline API on "
            if marker in line:
                return line.split(marker, 1)[1].strip()
        self.stop()
        raise RuntimeError("penstock serve did not start its API:\n" + "".join(self.output))

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("penstock-data")
    running = Server(data_dir)
    yield running
    running.stop()


def make_client(endpoint: str, key: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY):
    return boto3.session.Session().client(
        "codepipeline",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )


@pytest.fixture(scope="module")
def client(server):
    return make_client(server.endpoint)


@pytest.fixture(scope="module")
def source_repo(tmp_path_factory) -> Path:
    """A git repository with one commit, for the LocalGit source action."""
    repo = tmp_path_factory.mktemp("app-repo")
    (repo / "index.html").write_text("<h1>hello</h1>\n")
    git = shutil.which("git")
    assert git, "git is needed for the LocalGit source"
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "first page"]):
        subprocess.run([git, *args], cwd=repo, check=True, env=env)
    return repo


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def buildspec(commands):
    """An inline buildspec: JSON strings are valid YAML scalars."""
    lines = ["version: 0.2", "phases:", "  build:", "    commands:"]
    lines += [f"      - {json.dumps(c)}" for c in commands]
    lines += ["artifacts:", "  files:", "    - '**/*'"]
    return "\n".join(lines) + "\n"


def local_pipeline(name: str, repo: Path, fail_flag: Path | None = None) -> dict:
    """Source (LocalGit) -> Build (CodeBuild, run locally) -> Deploy (Manual approval, then an
    S3 deploy into a local bucket). The build fails while `fail_flag` exists."""
    commands = ["echo building", "test -f index.html"]
    if fail_flag is not None:
        commands.append(f"test ! -e {fail_flag}")
    return {
        "name": name,
        "roleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/penstock-test",
        "artifactStore": {"type": "S3", "location": "penstock-test-artifacts"},
        "stages": [
            {"name": "Source", "actions": [{
                "name": "Checkout",
                "actionTypeId": {"category": "Source", "owner": "Custom", "provider": "LocalGit", "version": "1"},
                "configuration": {"RepositoryPath": str(repo), "BranchName": "main"},
                "outputArtifacts": [{"name": "SourceOutput"}],
                "namespace": "SourceVariables",
            }]},
            {"name": "Build", "actions": [{
                "name": "Compile",
                "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {"BuildSpec": buildspec(commands)},
                "inputArtifacts": [{"name": "SourceOutput"}],
                "outputArtifacts": [{"name": "Site"}],
            }]},
            {"name": "Deploy", "actions": [{
                "name": "Approve",
                "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"},
                "runOrder": 1,
            }, {
                "name": "Publish",
                "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1"},
                "configuration": {"BucketName": "penstock-test-site", "Extract": "true"},
                "inputArtifacts": [{"name": "Site"}],
                "runOrder": 2,
            }]},
        ],
    }


def wait_for(what: str, probe, timeout: float = 90.0, interval: float = 0.1):
    """Poll `probe` until it returns something truthy; the server works asynchronously, so
    observing its state is the only way to know a step finished."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last observation: {last!r}")


def stage(state: dict, name: str) -> dict:
    return next(s for s in state["stageStates"] if s["stageName"] == name)


def action_state(state: dict, stage_name: str, action: str) -> dict:
    return next(a for a in stage(state, stage_name)["actionStates"] if a["actionName"] == action)


def open_token(state: dict, stage_name: str = "Deploy", action: str = "Approve"):
    latest = action_state(state, stage_name, action).get("latestExecution", {})
    if latest.get("status") == "InProgress":
        return latest.get("token")
    return None
