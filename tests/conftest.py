"""Shared fixtures. The real components (Kubernetes, dockerd, mosquitto, PostgreSQL, Redis)
are ``casemate.testenv``'s; their fixtures are the plugins in ``tests/fixtures``. A component
that cannot start fails the test."""

pytest_plugins = ["tests.fixtures.kube", "tests.fixtures.services"]
