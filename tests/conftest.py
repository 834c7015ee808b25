"""Shared fixtures. The real components (Kubernetes, dockerd, mosquitto, PostgreSQL, Redis)
come from the ``casemate.testenv`` plugins; a component that cannot start fails the test."""

pytest_plugins = ["casemate.testenv.fixtures_kube", "casemate.testenv.fixtures_services"]
