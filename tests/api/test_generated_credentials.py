"""`penstock serve` without PENSTOCK_ACCESS_KEY_ID/PENSTOCK_SECRET_ACCESS_KEY: it creates a key
pair in the data directory (mode 0600) on first start, prints the lines a user pastes, and a
client signing with those keys is accepted; later starts reuse the pair without printing it."""

import os
import stat
import subprocess

import boto3
import pytest
from botocore.config import Config

from conftest import REGION, penstock_binary


def start_serve(data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENSTOCK_")}
    process = subprocess.Popen(
        [str(penstock_binary()), "--data-dir", str(data_dir), "serve", "--listen", "127.0.0.1:0"],
        cwd=data_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    endpoint = None
    for line in process.stdout:
        lines.append(line)
        if "CodePipeline API on " in line:
            endpoint = line.split("CodePipeline API on ", 1)[1].strip()
        # The credentials message follows the endpoint line.
        if endpoint and ("aws CLI" in line or "# then:" in line):
            break
    assert endpoint, "".join(lines)
    return process, endpoint, lines


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def exports(lines):
    values = {}
    for line in lines:
        if line.startswith("export "):
            name, value = line[len("export "):].strip().split("=", 1)
            values[name] = value
    return values


def client(endpoint, key, secret):
    return boto3.session.Session().client(
        "codepipeline",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def test_first_start_creates_keys_that_clients_can_use(tmp_path):
    process, endpoint, lines = start_serve(tmp_path)
    try:
        for _ in range(3):
            lines.append(process.stdout.readline())
        values = exports(lines)
        assert values.keys() >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}, "".join(lines)
        keys_file = tmp_path / "api-credentials.json"
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        accepted = client(endpoint, values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"])
        assert accepted.list_pipelines()["pipelines"] == []
        refused = client(endpoint, values["AWS_ACCESS_KEY_ID"], "not-the-secret-" + "x" * 25)
        with pytest.raises(refused.exceptions.ClientError) as error:
            refused.list_pipelines()
        assert error.value.response["Error"]["Code"] == "InvalidSignatureException"
    finally:
        stop(process)

    # A second start reuses the pair and does not print the secret again.
    process, endpoint, lines = start_serve(tmp_path)
    try:
        text = "".join(lines)
        assert values["AWS_SECRET_ACCESS_KEY"] not in text
        assert "credentials" in text
        printed = subprocess.run(
            [str(penstock_binary()), "--data-dir", str(tmp_path), "credentials", "--endpoint-url", endpoint],
            check=True,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("PENSTOCK_")},
        ).stdout
        assert exports(printed.splitlines()) == values
        again = client(endpoint, values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"])
        assert again.list_pipelines()["pipelines"] == []
    finally:
        stop(process)
