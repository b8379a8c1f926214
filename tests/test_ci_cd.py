"""docs/ci-cd.md, run: every shell step of its GitHub Actions workflows and its GitLab CI
pipeline against a real server, as the README's tour is run (tests/test_cli.py), with the
page's own train.py and deploy.sh. Only the `pip install modelyard` steps are skipped: the
test's Modelyard is installed already.

A runner is emulated as far as the steps rely on it: GitHub runs each `run:` step in
`bash -eo pipefail` and passes `$GITHUB_ENV` lines on to the next steps; GitLab runs a
job's `before_script` and `script` in one shell, its jobs in the order of `stages`, only
those whose `rules` hold, and a `dotenv` report's variables reach the later jobs.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

import modelyard
from tests.conftest import LiveServer
from tests.test_cli import MODELYARD, TIMEOUT, environment, run

DOC = Path(__file__).resolve().parents[1] / "docs" / "ci-cd.md"
INSTALL = "pip install modelyard"
BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]


def blocks(language: str, heading: str | None = None) -> list[str]:
    """The ```LANGUAGE blocks of the page (of one ## section), indented ones included."""
    text = DOC.read_text()
    if heading is not None:
        text = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for match in re.finditer(rf"^( *)```{language}\n(.*?)^\1```$", text, re.S | re.M):
        indent = len(match.group(1))
        found.append("".join(line[indent:] for line in match.group(2).splitlines(True)))
    return found


def shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*BASH, script], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, f"{script}\n---\n{done.stdout}{done.stderr}"
    return done


def github(workflow: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a workflow's `run:` steps, job by job; their output."""
    parsed: dict[str, Any] = yaml.safe_load(workflow)
    assert set(parsed["env"]) <= set(env), "the test gives every variable the workflow reads"
    passed = cwd / "github.env"
    passed.write_text("")
    out = ""
    for job in parsed["jobs"].values():
        for step in job["steps"]:
            if "run" not in step:
                assert step["uses"].startswith(("actions/checkout@", "actions/setup-python@"))
                continue
            if step["run"].strip() == INSTALL:
                continue
            variables = dict(line.split("=", 1) for line in passed.read_text().splitlines())
            done = shell(step["run"], cwd, {**env, **variables, "GITHUB_ENV": str(passed)})
            out += done.stdout + done.stderr
    return out


def gitlab(pipeline: str, cwd: Path, env: dict[str, str]) -> str:
    """Run the pipeline's jobs whose rules hold under ``env``, stage by stage; their output."""
    parsed: dict[str, Any] = yaml.safe_load(pipeline)
    before = [line for line in parsed["default"]["before_script"] if line != INSTALL]
    assert before == [], "only the installation runs before each job"
    jobs = {name: job for name, job in parsed.items() if isinstance(job, dict) and "stage" in job}
    variables: dict[str, str] = {}
    out = ""
    for stage in parsed["stages"]:
        for job in (j for j in jobs.values() if j["stage"] == stage):
            if not all(_holds(rule["if"], {**env, **variables}) for rule in job["rules"]):
                continue
            done = shell("\n".join(job["script"]), cwd, {**env, **variables})
            out += done.stdout + done.stderr
            dotenv = job.get("artifacts", {}).get("reports", {}).get("dotenv")
            if dotenv:
                text = (cwd / dotenv).read_text()
                variables.update(line.split("=", 1) for line in text.splitlines())
    return out


def _holds(condition: str, env: dict[str, str]) -> bool:
    """The one form the pipeline's rules take: `$NAME == "value"` or `$NAME != "value"`."""
    match = re.fullmatch(r'\$(\w+) (==|!=) "([^"]*)"', condition)
    assert match, condition
    name, operator, value = match.groups()
    return (env.get(name) == value) == (operator == "==")


def approve_the_open_request(reg: modelyard.Registry) -> str:
    """What the reviewer does in the UI; the reference it approved."""
    (request,) = reg.requests()
    reg.approve(request.id, comment="read the card and the evaluation")
    return f"{request.model}/{request.version}"


def test_the_ci_cd_recipes_run_against_a_real_server(tmp_path: Path) -> None:
    """On the embedded default, as the recipes' registry is: what the recipes call is run
    on PostgreSQL by the API, SDK and CLI tests, and this run takes 15 s per database."""
    work = tmp_path / "repo"
    work.mkdir()
    data = tmp_path / "registry-data"
    created = run("admin", "create", "alice", "--data-dir", str(data), url=None, cwd=work)
    admin = created.ok().stdout.strip()
    (train,) = blocks("python")
    (work / "train.py").write_text(train)
    *accounts, deploy = blocks("sh", "What the pipelines need")
    (work / "deploy.sh").write_text(deploy)
    (work / "deploy.sh").chmod(0o755)
    server = LiveServer(data, None)
    server.start()
    try:
        url = server.url
        path = f"{Path(MODELYARD[0]).parent}{os.pathsep}{os.environ['PATH']}"
        as_admin = {**environment(url), "MODELYARD_TOKEN": admin, "PATH": path}
        shell("\n".join(accounts), work, as_admin)
        ci = (work / "ci.token").read_text().strip()
        deployer = (work / "deploy.token").read_text().strip()
        reviewer = modelyard.connect(url, token=admin)
        # Last week's model is in production.
        reviewer.register("churn", work / "train.py", metrics={"auc": 0.86})
        reviewer.promote("churn/1", "production", override="first release")
        runner = {**environment(url), "PATH": path, "GITHUB_RUN_ID": "7"}
        training, deployment = blocks("yaml", "GitHub Actions")
        out = github(training, work, {**runner, "MODELYARD_TOKEN": ci})
        assert "passed: churn/2 against churn/1" in out, out  # the gate
        assert "request 1: churn/2 → production, waiting for 1 approval(s)" in out, out
        assert approve_the_open_request(reviewer) == "churn/2"
        github(deployment, work, {**runner, "MODELYARD_TOKEN": deployer})
        assert (work / "current").resolve() == (work / "releases" / "churn-2").resolve()
        assert (work / "current" / "model.bin").read_bytes()

        (pipeline,) = blocks("yaml", "GitLab CI")
        lab = {**runner, "CI_PIPELINE_ID": "8", "AUC": "0.88"}
        out = gitlab(pipeline, work, {**lab, "MODELYARD_TOKEN": ci})
        assert "request 2: churn/3 → production" in out, out
        assert approve_the_open_request(reviewer) == "churn/3"
        deploying = {**lab, "MODELYARD_TOKEN": deployer, "DEPLOY": "true"}
        gitlab(pipeline, work, deploying)
        assert (work / "current").resolve() == (work / "releases" / "churn-3").resolve()
        # The next scheduled run finds nothing new: nothing is deployed twice.
        again = gitlab(pipeline, work, deploying)
        assert "handled already" in again, again
        reviewer.close()
    finally:
        server.stop()
