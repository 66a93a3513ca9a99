"""The scheduler examples in deploy/ parse and branch on the pipeline's exit codes as documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
#: Codes that need a person before another try (usage, API key, threshold, spend cap, lock).
FINAL = {2, 4, 5, 6, 7}
RESUMABLE = 3


def cronjob() -> dict[str, Any]:
    """The CronJob document of deploy/k8s/cronjob.yaml."""
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "cronjob.yaml").read_text()) if d]
    jobs: list[dict[str, Any]] = [d for d in docs if d["kind"] == "CronJob"]
    assert len(jobs) == 1
    return jobs[0]


def test_every_yaml_example_parses() -> None:
    """Each YAML file under deploy/ loads with yaml.safe_load_all into Kubernetes-shaped documents."""
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert files
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path


def test_cronjob_pod_failure_policy_branches_on_exit_codes() -> None:
    """FailJob covers 2, 4, 5, 6, 7; exit 3 is retried (Ignore); the container name matches; no overlap."""
    spec = cronjob()["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy is rejected otherwise
    containers = {c["name"] for c in pod["containers"]}
    by_action: dict[str, set[int]] = {}
    for rule in job["podFailurePolicy"]["rules"]:
        codes = rule.get("onExitCodes")
        if codes is None:
            continue
        assert codes["operator"] == "In" and codes["containerName"] in containers
        by_action.setdefault(rule["action"], set()).update(codes["values"])
    assert by_action["FailJob"] >= FINAL
    assert RESUMABLE in by_action["Ignore"] and RESUMABLE not in by_action["FailJob"]
    assert 0 not in set().union(*by_action.values())  # Kubernetes rejects 0 in an In rule


def test_cronjob_keeps_the_state_dir_and_secrets_out_of_the_file() -> None:
    """The state dir is on the persistent volume, and the API key and ping URL come from a Secret."""
    pod = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    state_dir = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--state-dir="))
    assert any(state_dir.startswith(m) for m in mounts)
    env = {e["name"]: e for e in container["env"]}
    for name in ("DASHSCOPE_API_KEY", "HEALTHCHECKS_URL"):
        assert "secretKeyRef" in env[name]["valueFrom"]
    assert "--ping-url=$(HEALTHCHECKS_URL)" in container["args"]


def test_systemd_restarts_only_resumable_runs() -> None:
    """The service restarts on failure but RestartPreventExitStatus lists every final code and not 3."""
    unit = (DEPLOY / "systemd" / "media-pipeline.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, flags=re.MULTILINE))
    assert settings["Restart"] == "on-failure"
    assert {int(c) for c in settings["RestartPreventExitStatus"].split()} == FINAL
    assert str(RESUMABLE) not in settings["SuccessExitStatus"].split()
    timer = (DEPLOY / "systemd" / "media-pipeline.timer").read_text()
    assert re.search(r"^OnCalendar=", timer, flags=re.MULTILINE)


def test_cron_line_relies_on_the_state_dir_lock() -> None:
    """The crontab entry runs the pipeline directly, without flock, and unescaped % is absent."""
    entries = [line for line in (DEPLOY / "cron.example").read_text().splitlines()
               if line and not line.startswith("#") and not line.startswith("SHELL=")]
    assert len(entries) == 1
    assert "flock" not in entries[0] and "%" not in entries[0]
    assert " run " in entries[0] and "--state-dir" in entries[0]


def test_airflow_example_compiles_and_skips_on_lock() -> None:
    """The DAG file is valid Python (compiled, not imported) and its BashOperator skips on exit 7."""
    source = (DEPLOY / "airflow" / "dag_example.py").read_text()
    tree = compile(source, "dag_example.py", "exec", flags=ast.PyCF_ONLY_AST)
    skip = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
            for kw in node.keywords if kw.arg == "skip_on_exit_code"]
    assert [ast.literal_eval(v) for v in skip] == [7]
    compile(source, "dag_example.py", "exec")
