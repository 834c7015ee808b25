"""Posture manifest scan: seconds and peak memory for 10,000 objects.

Writes a corpus of manifests (100 files of 100 documents across 50 namespaces: Deployments,
StatefulSets, CronJobs, Pods, Services, ConfigMaps, Roles, RoleBindings, NetworkPolicies), then
reads and checks them with every rule, as ``casemate posture scan DIR`` does (findings kept,
namespace rules at the end). Peak memory is the process's maximum resident set (ru_maxrss),
interpreter included. Aims (issue 13): under 5 s and under 300 MB.

    .venv/bin/python bench/posture.py [--objects 10000] [--per-file 100]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import yaml

from casemate.posture.engine import Scanner
from casemate.posture.manifests import LoadProblem, load_paths
from casemate.posture.model import Subject

AIM_SECONDS = 5.0
AIM_MB = 300.0


def _container(i: int) -> dict[str, object]:
    c: dict[str, object] = {
        "name": f"app{i}",
        "image": f"registry.example/team/app{i % 37}:1.{i % 9}",
        "ports": [{"containerPort": 8080}],
        "env": [{"name": "MODE", "value": "prod"}, {"name": "API_TOKEN", "value": f"tok{i}x"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    if i % 3 == 0:
        c["securityContext"] = {"privileged": i % 6 == 0, "runAsUser": 0}
    else:
        c["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        }
    return c


def _object(i: int) -> dict[str, object]:
    ns = f"team-{i % 50}"
    meta = {"name": f"obj-{i}", "namespace": ns, "labels": {"app": f"app{i % 20}"}}
    pod_spec = {"containers": [_container(i), _container(i + 1)], "hostNetwork": i % 11 == 0}
    template = {"metadata": {"labels": {"app": f"app{i % 20}"}}, "spec": pod_spec}
    kind = i % 9
    if kind == 0:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                "spec": {"replicas": 2, "template": template}}  # fmt: skip
    if kind == 1:
        return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
                "spec": {"template": template}}  # fmt: skip
    if kind == 2:
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {"schedule": "0 * * * *",
                         "jobTemplate": {"spec": {"template": template}}}}  # fmt: skip
    if kind == 3:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
    if kind == 4:
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"type": "NodePort" if i % 2 else "ClusterIP",
                         "ports": [{"port": 80}]}}  # fmt: skip
    if kind == 5:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {"app.conf": "x = 1\n" * 20, "db_password": "s3cret"}}  # fmt: skip
    if kind == 6:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                "rules": [{"apiGroups": [""], "resources": ["secrets", "pods"],
                           "verbs": ["get", "list"]}]}  # fmt: skip
    if kind == 7:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "cluster-admin"},
                "subjects": [{"kind": "User", "name": f"u{i}"}]}  # fmt: skip
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": {"podSelector": {"matchLabels": {"app": f"app{i % 20}"}},
                     "ingress": [{"from": [{"podSelector": {}}]}]}}  # fmt: skip


def write_corpus(folder: Path, objects: int, per_file: int) -> int:
    total = 0
    for start in range(0, objects, per_file):
        docs = [_object(i) for i in range(start, min(start + per_file, objects))]
        text = yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
        path = folder / f"part-{start // per_file:04d}.yaml"
        path.write_text(text)
        total += path.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--per-file", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="casemate-posture-bench-") as tmp:
        folder = Path(tmp)
        size = write_corpus(folder, args.objects, args.per_file)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        cpu_start = time.process_time()
        scanner = Scanner()
        findings = []
        problems = 0
        for item in load_paths([str(folder)]):
            if isinstance(item, Subject):
                findings.extend(scanner.check(item))
            elif isinstance(item, LoadProblem):
                problems += 1
        findings.extend(scanner.finish())
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"corpus: {scanner.objects} objects, {size / 1e6:.1f} MB of YAML, {problems} problems")
    print(f"manifest scan: {seconds:.2f} s wall, {cpu:.2f} s CPU, {len(findings)} findings "
          f"({scanner.objects / seconds:,.0f} objects/s)")  # fmt: skip
    print(f"peak memory (max RSS): {peak:.0f} MB (before the scan: {rss_before:.0f} MB)")
    print(f"ratio to aim: time {seconds / AIM_SECONDS:.2f}x of {AIM_SECONDS:.0f} s, "
          f"memory {peak / AIM_MB:.2f}x of {AIM_MB:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
