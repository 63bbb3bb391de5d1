"""Starts Prometheus for the monitoring pipeline (examples/pipelines/monitoring.yaml).

Prometheus reads no environment variables in its configuration, and the ports to scrape are
the deployment's: this writes `prometheus.yml` from the service's environment into its
storage directory, then execs `prometheus` with it. Standard library only: the service runs
the system's `python3`, in this directory, as a uid of its own.

Environment (defaults in brackets):
  SHOPFLOOR_CONTROLLER_TARGETS  host:port,… of controllers' metrics-only ports [127.0.0.1:9463]
  SHOPFLOOR_WORKER_TARGETS      host:port,… of workers' metrics ports [127.0.0.1:9464]
  PROMETHEUS_LISTEN             where its UI and API listen [127.0.0.1:9090]
  ALERTMANAGER                  host:port of an Alertmanager, or empty for none [127.0.0.1:9093]
  SCRAPE_INTERVAL, EVALUATION_INTERVAL  [15s, 15s]
  RULE_FILES                    rule files, comma-separated, relative to here [alerts.yml]
  PROMETHEUS_STORAGE            its TSDB [/tmp/prometheus: the service's private tmpfs, gone
                                with the service; point it at a directory of its own to keep]
  PROMETHEUS_RETENTION          [1d]
"""

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def targets(name: str, default: str) -> list[str]:
    return [t.strip() for t in os.environ.get(name, default).split(",") if t.strip()]


def config() -> dict:
    rules = [str(HERE / r.strip()) for r in os.environ.get("RULE_FILES", "alerts.yml").split(",")]
    alertmanager = os.environ.get("ALERTMANAGER", "127.0.0.1:9093").strip()
    scrape = os.environ.get("SCRAPE_INTERVAL", "15s")
    return {
        "global": {
            "scrape_interval": scrape,
            "scrape_timeout": os.environ.get("SCRAPE_TIMEOUT", "") or _timeout(scrape),
            "evaluation_interval": os.environ.get("EVALUATION_INTERVAL", "15s"),
        },
        "rule_files": rules,
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            if alertmanager
            else []
        },
        "scrape_configs": [
            {
                "job_name": "shopfloor-controller",
                "static_configs": [
                    {"targets": targets("SHOPFLOOR_CONTROLLER_TARGETS", "127.0.0.1:9463")}
                ],
            },
            {
                "job_name": "shopfloor-workers",
                "static_configs": [
                    {"targets": targets("SHOPFLOOR_WORKER_TARGETS", "127.0.0.1:9464")}
                ],
            },
        ],
    }


def _timeout(interval: str) -> str:
    """The scrape timeout may not exceed the interval (Prometheus's default is 10 s)."""
    if interval.endswith("s") and interval[:-1].isdigit() and int(interval[:-1]) < 10:
        return interval
    return "10s"


def main() -> None:
    storage = Path(os.environ.get("PROMETHEUS_STORAGE", "/tmp/prometheus"))
    storage.mkdir(parents=True, exist_ok=True)
    path = storage / "prometheus.yml"
    path.write_text(json.dumps(config(), indent=2))  # JSON is YAML
    argv = [
        "prometheus",
        f"--config.file={path}",
        f"--storage.tsdb.path={storage / 'data'}",
        f"--storage.tsdb.retention.time={os.environ.get('PROMETHEUS_RETENTION', '1d')}",
        f"--web.listen-address={os.environ.get('PROMETHEUS_LISTEN', '127.0.0.1:9090')}",
        *sys.argv[1:],
    ]
    sys.stdout.flush()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
