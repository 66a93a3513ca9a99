"""Example Airflow DAG for the nightly media-pipeline run (Airflow 2.6+; not imported by tests).

Exit codes: 0 ok · 1 finished, some items failed or lines were rejected · 2 usage/config
error · 3 interrupted, time limit or service unreachable (resumable) · 4 API key refused ·
5 failure threshold · 6 spend cap · 7 another run holds the state dir.

Airflow retries on any non-zero exit code; it cannot retry on some codes only. Retries are
what resumes a run after exit 3, so they stay on; a retry after 1, 2, 4, 5 or 6 costs one
quick start that ends the same way (a finished run finds nothing left to do). Exit 7 means
another run is already working on this state dir: the task is skipped, not failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

COMMAND = (
    "exec /opt/media-pipeline/.venv/bin/media-pipeline run /srv/media/catalog.jsonl"
    " --out /srv/media/results.jsonl"
    " --state-dir /var/lib/media-pipeline/state"
    " --append"
    " --max-cost 500"
    " --max-duration 6h"
    " --pushgateway http://pushgateway.monitoring:9091"
    ' --ping-url "$HEALTHCHECKS_URL"'
    " --log-format json"
)

with DAG(
    dag_id="media_pipeline_nightly",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # the state-dir lock (exit 7) would stop a second one anyway
    tags=["media"],
) as dag:
    run_catalog = BashOperator(
        task_id="run_catalog",
        bash_command=COMMAND,
        # Secrets from Airflow connections/variables or the worker's environment; the ping
        # URL's path is the check's secret, keep it out of the DAG file.
        env={
            "DASHSCOPE_API_KEY": "{{ var.value.dashscope_api_key }}",
            "HEALTHCHECKS_URL": "{{ var.value.media_pipeline_healthchecks_url }}",
            "MEDIA_PIPELINE_INSTANCE": "airflow-nightly",
        },
        append_env=True,
        skip_on_exit_code=7,
        # Exit 3 (time limit, interrupted, unreachable): the retry resumes the run.
        retries=3,
        retry_delay=timedelta(minutes=15),
        execution_timeout=timedelta(hours=7),  # backstop over --max-duration 6h
    )


# ---- Kubernetes sketch -------------------------------------------------------------------
# The same run in a pod (apache-airflow-providers-cncf-kubernetes). The state dir must be on
# a persistent volume so a retry resumes; see deploy/k8s/cronjob.yaml for the volume, the
# Secret and the reasons behind each flag.
#
# from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
# from kubernetes.client import models as k8s
#
# run_in_pod = KubernetesPodOperator(
#     task_id="run_catalog_pod",
#     dag=dag,
#     name="media-pipeline",
#     namespace="media",
#     image="registry.example.com/media-pipeline:0.1.0",
#     arguments=["run", "/data/manifests/catalog.jsonl", "--out=/data/results/results.jsonl",
#                "--state-dir=/data/state", "--append", "--max-cost=500", "--max-duration=6h",
#                "--pushgateway=http://pushgateway.monitoring.svc:9091",
#                "--ping-url=$(HEALTHCHECKS_URL)", "--log-format=json"],
#     env_vars=[k8s.V1EnvVar(name="MEDIA_PIPELINE_INSTANCE", value="airflow-nightly")],
#     secrets=[...],  # airflow.providers.cncf.kubernetes.secret.Secret for the key and the URL
#     volumes=[k8s.V1Volume(name="data", persistent_volume_claim=
#              k8s.V1PersistentVolumeClaimVolumeSource(claim_name="media-pipeline-data"))],
#     volume_mounts=[k8s.V1VolumeMount(name="data", mount_path="/data")],
#     skip_on_exit_code=7,
#     retries=3,
#     retry_delay=timedelta(minutes=15),
#     get_logs=True,
# )
