from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.bastion.kubectl import (
    CommandRefused,
    KubeCommand,
    ResourceRef,
    canonical_command_path,
    check_paths,
    known_command_paths,
    parse_command,
    resolve_in_workspace,
)
from casemate.errors import Denied

WS = PurePosixPath("/work/session")


def parse(line: str, **kwargs: object) -> KubeCommand:
    return parse_command(shlex.split(line), **kwargs)  # type: ignore[arg-type]


def refused(line: str, **kwargs: object) -> str:
    with pytest.raises(CommandRefused) as info:
        parse(line, **kwargs)
    return info.value.reason


# Flag syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "kubectl get po -n app",
        "kubectl get po -napp",
        "kubectl get po -n=app",
        "kubectl get po --namespace app",
        "kubectl get po --namespace=app",
        "kubectl -n app get po",
        "kubectl --namespace=app get po",
        "kubectl get -n app po",
        "kubectl get po -n other --namespace app",
    ],
)
def test_namespace_spellings(line: str):
    command = parse(line)
    assert command.namespace == "app"
    assert command.resources == (ResourceRef("pods"),)
    assert command.flag("namespace") == "app"


def test_short_flag_clusters_and_booleans():
    command = parse("kubectl exec -it web -c app -- sh -c id")
    assert command.flag("stdin") == "true"
    assert command.flag("tty") == "true"
    assert command.flag("container") == "app"
    assert command.resources == (ResourceRef("pods", "web"),)
    assert command.command == ("sh", "-c", "id")
    assert parse("kubectl exec -ti web -capp -- sh").flag("container") == "app"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--all", True),
        ("--all=true", True),
        ("--all=T", True),
        ("--all=1", True),
        ("--all=TRUE", True),
        ("--all=false", False),
        ("--all=0", False),
        ("--all=F", False),
    ],
)
def test_boolean_values(flag: str, value: bool):
    assert parse(f"kubectl delete pods {flag}").all is value


def test_boolean_flags_take_values_only_with_equals():
    # pflag: "--all false" is --all plus a positional "false" (a resource name)
    command = parse("kubectl delete pods --all false")
    assert command.all is True
    assert command.resources == (ResourceRef("pods", "false"),)
    assert "true or false" in refused("kubectl delete pods --all=yes")
    assert parse("kubectl get po -A=false").all_namespaces is False


def test_optional_value_flags():
    assert parse("kubectl apply -f x.yaml --dry-run").dry_run == "client"
    assert parse("kubectl apply -f x.yaml --dry-run=server").dry_run == "server"
    assert parse("kubectl apply -f x.yaml --dry-run=none").dry_run == "none"
    assert parse("kubectl apply -f x.yaml --dry-run=true").dry_run == "client"
    assert parse("kubectl apply -f x.yaml --dry-run=false").dry_run == "none"
    # NoOptDefVal: the next word is not the value but a positional argument
    assert "exactly one NAME is required, got 2" in refused(
        "kubectl create ns prod --dry-run client"
    )
    command = parse("kubectl create ns --dry-run server")
    assert command.dry_run == "client"
    assert command.resources == (ResourceRef("namespaces", "server"),)
    assert "--dry-run" in refused("kubectl apply -f x.yaml --dry-run=maybe")
    assert parse("kubectl delete po x --cascade").flag("cascade") == "background"


def test_double_dash_ends_flags():
    command = parse("kubectl delete po x -- -n kube-system")
    assert command.namespace is None
    assert command.resources == (
        ResourceRef("pods", "x"),
        ResourceRef("pods", "-n"),
        ResourceRef("pods", "kube-system"),
    )
    assert parse("kubectl delete -- ns prod").resources == (ResourceRef("namespaces", "prod"),)


def test_underscores_in_long_flags_are_dashes_for_kubectl_only():
    assert parse("kubectl get po --all_namespaces").all_namespaces is True
    assert "not allowed" in refused("kubectl get po --as_group=x")
    assert "unknown flag" in refused("helm ls --all_namespaces")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("kubectl get po --nam=x", "unknown flag --nam"),  # no abbreviations
        ("kubectl get po --namespace", "needs a value"),
        ("kubectl get po -n", "needs a value"),
        ("kubectl get po -Z", "unknown flag -Z"),
        ("kubectl get po -Az", "unknown flag -z"),
        ("kubectl get po ---x", "bad flag syntax"),
        ("kubectl get po --=x", "bad flag syntax"),
        ("kubectl get po -test.v", "bad flag syntax"),
        ("kubectl get po ''", "empty argument"),
        ("kubectl logs -p=maybe x", "true or false"),
    ],
)
def test_flag_errors(line: str, fragment: str):
    assert fragment in refused(line)


def test_short_equals_quirk():
    # pflag: "-n=" with nothing after is the value "=" (which is not a namespace)
    assert "invalid namespace '='" in refused("kubectl get po -n=")


# Finding the command the way cobra does ------------------------------------------------------


def test_command_path_and_aliases():
    assert parse("kubectl rollout undo deploy/x").path == ("rollout", "undo")
    assert parse("kubectl create cm x").path == ("create", "configmap")
    assert parse("kubectl create secret generic x").subverb == "secret generic"
    assert parse("kubectl create svc clusterip x").path == ("create", "service", "clusterip")
    assert parse("kubectl top nodes").path == ("top", "node")
    assert parse("kubectl set sa deploy/x robot").path == ("set", "serviceaccount")
    assert parse("helm un web").path == ("uninstall",)
    assert parse("helm ls").path == ("list",)
    assert parse("helm inspect values ./c").path == ("show", "values")


def test_flags_before_the_command():
    # cobra: global value flags skip their value; local flags given with "=" are fine
    assert parse("kubectl -n x -v 2 rollout -n y undo deploy/z").namespace == "y"
    assert parse("kubectl --replicas=0 scale deploy x").replicas == 0
    # an unknown-at-root flag without "=" is assumed to take the next word: like kubectl
    assert parse("kubectl --replicas 0 scale deploy x").replicas == 0
    assert "unknown kubectl command 'ns'" in refused("kubectl --wait delete ns prod")
    assert "unknown kubectl command 'ns'" in refused("kubectl -h delete ns prod")
    assert "unknown kubectl command 'pod'" in refused("kubectl -i exec pod -- sh")
    assert parse("kubectl -it exec pod -- sh").verb == "exec"
    assert "no kubectl command" in refused("kubectl -n get")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("kubectl", "no kubectl command"),
        ("kubectl krew install x", "unknown kubectl command 'krew'"),
        ("kubectl __complete get", "unknown kubectl command '__complete'"),
        ("kubectl rollout", "needs a sub-command"),
        ("kubectl rollout frobnicate deploy/x", "unknown sub-command 'frobnicate'"),
        ("kubectl create foo x", "unexpected argument 'foo'"),
        ("kubectl create secret", "needs a sub-command"),
        ("kubectl config view", "not allowed"),
        ("kubectl config set-context x", "not allowed"),
        ("kubectl edit deploy x", "not allowed: opens an editor"),
        ("kubectl apply edit-last-applied deploy/x", "not allowed: opens an editor"),
        ("kubectl proxy", "not allowed"),
        ("kubectl plugin list", "not allowed"),
        ("kubectl alpha x", "not allowed"),
        ("helm repo add x y", "not allowed"),
        ("helm plugin list", "not allowed"),
        ("helm dependency update ./c", "not allowed"),
        ("helm frob", "unknown helm command"),
        ("kubectl version extra", "unexpected argument"),
    ],
)
def test_command_errors(line: str, fragment: str):
    assert fragment in refused(line)


def test_refusal_is_a_denial():
    with pytest.raises(Denied):
        parse_command(["kubectl", "proxy"])
    with pytest.raises(CommandRefused, match="kubectl or helm"):
        parse_command(["oc", "get", "po"])
    with pytest.raises(CommandRefused, match="NUL"):
        parse_command(["kubectl", "get", "po\x00"])


# Identity and target --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        "--kubeconfig=/x",
        "--kubeconfig /x",
        "--token=t",
        "--token t",
        "-s https://evil",
        "-shttps://evil",
        "--server=https://evil",
        "--as=system:admin",
        "--as-group=system:masters",
        "--as-uid=0",
        "--user=admin",
        "--username=admin",
        "--password=x",
        "--context=prod",
        "--cluster=prod",
        "--certificate-authority=/ca",
        "--client-certificate=/c",
        "--client-key=/k",
        "--insecure-skip-tls-verify",
        "--insecure-skip-tls-verify=false",
        "--tls-server-name=x",
        "--cache-dir=/tmp",
        "--profile=cpu",
        "--log-file=/tmp/x",
    ],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_identity_flags_are_refused(flags: str, where: str):
    line = f"kubectl {flags} get po" if where == "before" else f"kubectl get po {flags}"
    assert "not allowed" in refused(line)


@pytest.mark.parametrize(
    "flags",
    [
        "--kube-context prod",
        "--kube-token t",
        "--kube-apiserver https://x",
        "--kube-as-user admin",
        "--kube-as-group g",
        "--kube-ca-file /ca",
        "--kube-insecure-skip-tls-verify",
        "--kube-tls-server-name x",
        "--kubeconfig /x",
        "--registry-config /x",
        "--repository-config /x",
        "--repository-cache /x",
    ],
)
def test_helm_identity_flags_are_refused(flags: str):
    assert "not allowed" in refused(f"helm {flags} ls")
    assert "not allowed" in refused(f"helm ls {flags}")


def test_local_flags_shadow_refused_globals():
    # create rolebinding --user names the subject, debug --profile the debug profile
    command = parse("kubectl create rolebinding x --clusterrole=view --user=bob")
    assert command.flag("user") == "bob"
    assert parse("kubectl debug web --image=busybox --profile=general").privileged is False
    assert parse("kubectl set subject rolebinding/x --user=bob").flag("user") == "bob"


def test_verbosity_is_capped():
    assert parse("kubectl get po -v 5").flag("v") == "5"
    assert "verbosity" in refused("kubectl get po -v 6")  # prints the session's kubeconfig path
    assert "verbosity" in refused("kubectl get po -v=7")
    assert "verbosity" in refused("kubectl get po --v=0x10")
    assert "verbosity" in refused("kubectl get po --v=-1")
    assert "not allowed" in refused("kubectl get po --vmodule=round_trippers=9")


# Resources ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("ns prod", [("namespaces", "prod")]),
        ("NS/prod", [("namespaces", "prod")]),
        ("namespace/prod", [("namespaces", "prod")]),
        ("Namespace prod", [("namespaces", "prod")]),
        ("namespaces.v1./prod", [("namespaces", "prod")]),
        ("ns prod staging", [("namespaces", "prod"), ("namespaces", "staging")]),
        ("po,svc a b", [("pods", "a"), ("pods", "b"), ("services", "a"), ("services", "b")]),
        ("po,po a", [("pods", "a")]),
        ("po/a svc/b", [("pods", "a"), ("services", "b")]),
        ("deployment.apps x", [("deployments", "x")]),
        ("deployments.v1.apps/x", [("deployments", "x")]),
        ("po", [("pods", None)]),
        ("po,svc", [("pods", None), ("services", None)]),
        ("all", [("all", None)]),
        ("certificates.v1.cert-manager.io x", [("certificates.cert-manager.io", "x")]),
        ("Widget x", [("widget", "x")]),
    ],
)
def test_resource_arguments(args: str, expected: list[tuple[str, str | None]]):
    command = parse(f"kubectl delete {args}")
    assert [(r.kind, r.name) for r in command.resources] == expected


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ("po a/b", "not both"),
        ("po/a/b", "exactly one '/'"),
        ("po,svc/a", "single resource type"),
        ("/a", "exactly one '/'"),
        ("po/", "exactly one '/'"),
        ("po,,svc", "empty resource type"),
        ("nѕ prod", "invalid resource type"),
        ("ns prоd", "invalid resource name"),
        ("ns 'a b'", "invalid resource name"),
        ("ns ..", "invalid resource name"),
        ("po,svc a/b", "exactly one '/'"),
    ],
)
def test_resource_argument_errors(args: str, fragment: str):
    assert fragment in refused(f"kubectl delete {args}")


def test_kinds_expand_the_all_category():
    kinds = parse("kubectl get all").kinds
    assert {"all", "pods", "deployments", "services"} <= kinds
    assert "secrets" not in kinds


def test_label_and_taint_specs_are_not_resources():
    command = parse("kubectl label po x a=b c-")
    assert command.resources == (ResourceRef("pods", "x"),)
    assert command.args == ("a=b", "c-")
    taint = parse("kubectl taint nodes n1 k=v:NoSchedule dedicated:NoExecute-")
    assert taint.resources == (ResourceRef("nodes", "n1"),)
    assert taint.args == ("k=v:NoSchedule", "dedicated:NoExecute-")
    assert "before changes" in refused("kubectl label po a=b x")
    env = parse("kubectl set env deploy/x A=1 B-")
    assert env.args == ("A=1", "B-")
    assert parse("kubectl set image deploy/x app=nginx:1").args == ("app=nginx:1",)
    assert parse("kubectl set sa deploy x robot").resources == (ResourceRef("deployments", "x"),)
    assert parse("kubectl set selector svc/x app=web").args == ("app=web",)


@pytest.mark.parametrize(
    ("line", "resources", "args"),
    [
        ("kubectl logs web", [("pods", "web")], ()),
        ("kubectl logs deploy/x -c y --tail=50", [("deployments", "x")], ()),
        ("kubectl logs web app", [("pods", "web")], ("app",)),
        ("kubectl logs -l app=web", [], ()),
        ("kubectl attach web -it", [("pods", "web")], ()),
        ("kubectl port-forward svc/db 5432 8080:80", [("services", "db")], ("5432", "8080:80")),
        ("kubectl cordon n1 n2", [("nodes", "n1"), ("nodes", "n2")], ()),
        ("kubectl drain node/n1", [("nodes", "n1")], ()),
        ("kubectl certificate approve csr-1", [("certificatesigningrequests", "csr-1")], ()),
        ("kubectl top pod web", [("pods", "web")], ()),
        ("kubectl create ns prod", [("namespaces", "prod")], ()),
        ("kubectl create token default", [("serviceaccounts", "default")], ()),
        ("kubectl create quota q --hard=pods=1", [("resourcequotas", "q")], ()),
        ("kubectl explain pods.spec.containers", [], ("pods.spec.containers",)),
        ("kubectl auth can-i get pods", [], ("get", "pods")),
        ("kubectl api-resources", [], ()),
        ("kubectl debug web -it --image=busybox", [("pods", "web")], ()),
    ],
)
def test_positional_modes(line: str, resources: list[tuple[str, str]], args: tuple[str, ...]):
    command = parse(line)
    assert [(r.kind, r.name) for r in command.resources] == resources
    assert command.args == args


def test_logs_follow_is_not_a_file():
    command = parse("kubectl logs -f web")
    assert command.flag("follow") == "true"
    assert command.files == ()


def test_exec_needs_the_dash():
    assert "with '--'" in refused("kubectl exec web sh")
    command = parse("kubectl exec -- sh")
    assert command.resources == ()
    assert command.command == ("sh",)


def test_run_and_debug_commands():
    run = parse("kubectl run x --image=busybox -it --rm -- sh -c 'echo hi'")
    assert run.resources == (ResourceRef("pods", "x"),)
    assert run.command == ("sh", "-c", "echo hi")
    assert parse("kubectl run x --image=busybox a b").command == ("a", "b")
    assert "NAME" in refused("kubectl run --image=busybox")
    debug = parse("kubectl debug node/n1 -it --image=busybox -- chroot /host")
    assert debug.subverb == "node"
    assert debug.path == ("debug", "node")
    assert debug.command == ("chroot", "/host")
    assert debug.privileged is True
    assert parse("kubectl create job j --image=busybox -- date").command == ("date",)


def test_cp_sides():
    command = parse("kubectl cp kube-system/etcd-0:/etc/x ./x")
    assert command.resources == (ResourceRef("pods", "etcd-0", "kube-system"),)
    assert command.local_paths == ("./x",)
    upload = parse("kubectl cp ./tool web:/tmp/tool -c app")
    assert upload.resources == (ResourceRef("pods", "web"),)
    assert upload.local_paths == ("./tool",)
    assert "source and a destination" in refused("kubectl cp a")
    assert "invalid cp argument" in refused("kubectl cp :x ./y")
    assert "invalid cp argument" in refused("kubectl cp a/b/c:x ./y")


# Values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0", 0),
        ("00", 0),
        ("-0", 0),
        ("+0", 0),
        ("0x0", 0),
        ("0X0", 0),
        ("0o0", 0),
        ("0b0", 0),
        ("3", 3),
        ("010", 8),
        ("0x1f", 31),
        ("-1", -1),
    ],
)
def test_replicas_parse_like_go(value: str, number: int):
    assert parse(f"kubectl scale deploy x --replicas={value}").replicas == number


@pytest.mark.parametrize(
    "value", ["", "0_0", "1_000", "08", "0x", "abc", " 0", "1e3", "٣", "9" * 30]
)
def test_bad_replicas_are_refused(value: str):
    assert "--replicas" in refused(f"kubectl scale deploy x --replicas='{value}'")


def test_last_replicas_wins():
    assert parse("kubectl scale deploy x --replicas=3 --replicas 0").replicas == 0
    assert parse("kubectl create deploy x --image=y -r 0").replicas == 0


@pytest.mark.parametrize(
    ("flags", "output", "data"),
    [
        ("", None, False),
        ("-o wide", "wide", False),
        ("-o name", "name", False),
        ("-o yaml", "yaml", True),
        ("-oJSON", "json", True),
        ("-o=yaml", "yaml", True),
        ("--output=jsonpath={.data}", "jsonpath", True),
        ("-o go-template={{.data}}", "go-template", True),
        ("-o custom-columns=A:.data", "custom-columns", True),
        ("--template={{.data}}", "go-template", True),
    ],
)
def test_output_formats(flags: str, output: str | None, data: bool):
    command = parse(f"kubectl get secret x {flags}")
    assert command.output == output
    assert command.data_output is data


def test_selectors_and_bulk():
    assert parse("kubectl delete po -l app=web").selector == "app=web"
    assert parse("kubectl delete po -l ''").selector == ""
    assert parse("kubectl delete po --field-selector=a=b").field_selector == "a=b"
    assert parse("kubectl delete po -l x").bulk is True
    assert parse("kubectl delete po x").bulk is False
    assert parse("kubectl delete po x -A").bulk is True
    assert parse("kubectl get po").bulk is True
    # for expose and create pdb, --selector is a field of the new object, not a query
    assert parse("kubectl expose deploy x --port=80 --selector=app=x").selector is None
    assert parse("kubectl run x --image=y -l app=x").selector is None


def test_privileged_detection():
    assert parse("kubectl run x --image=y --privileged").privileged is True
    assert parse("kubectl run x --image=y --privileged=false").privileged is False
    assert parse("kubectl run x --image=y").privileged is False
    for overrides in (
        '{"spec":{"hostPID":true}}',
        '{"spec":{"\\u0068ostNetwork":true}}',
        '{"spec":{"containers":[{"name":"x","securityContext":{"Privileged":true}}]}}',
        '[{"op":"add","path":"/spec/hostIPC","value":true}]',
        '{"spec":{"volumes":[{"hostPath":{"path":"/"}}]}}',
        '{"spec":{"serviceAccountName":"admin"}}',
    ):
        command = parse_command(["kubectl", "run", "x", "--image=y", f"--overrides={overrides}"])
        assert command.privileged is True, overrides
    harmless = '{"metadata":{"labels":{"a":"b"}}}'
    assert (
        parse_command(["kubectl", "run", "x", "--image=y", f"--overrides={harmless}"]).privileged
        is False
    )
    assert "not valid JSON" in refused("kubectl run x --image=y --overrides={")
    assert parse("kubectl debug web --image=y --profile=sysadmin").privileged is True
    assert parse("kubectl debug web --image=y --profile=netadmin").privileged is True
    assert parse("kubectl debug web --image=y --custom=./c.json").privileged is True
    assert parse("kubectl debug web --image=y").privileged is False


def test_raw_paths():
    command = parse("kubectl get --raw /api/v1/namespaces/app/secrets/db")
    assert command.resources == (ResourceRef("secrets", "db", "app"),)
    assert command.output == "raw"
    assert command.data_output is True
    assert parse("kubectl delete --raw /api/v1/namespaces/prod").resources == (
        ResourceRef("namespaces", "prod", "prod"),
    )
    assert parse("kubectl get --raw /apis/apps/v1/namespaces/x/deployments").resources == (
        ResourceRef("deployments", None, "x"),
    )
    assert parse("kubectl get --raw /apis/cert-manager.io/v1/certificates").resources == (
        ResourceRef("certificates.cert-manager.io"),
    )
    assert parse("kubectl get --raw /healthz").resources == ()
    assert parse("kubectl get --raw '/api/v1/pods?watch=1'").resources == (ResourceRef("pods"),)
    for bad in (
        "https://evil/api",
        "//evil/api",
        "api/v1",
        "/api/v1/%73ecrets",
        "/api/v1/namespaces/x/../secrets",
        "/api/v1/./pods",
        "/api//v1",
        "/api/v1/pods#x",
        "/api\\v1",
    ):
        assert "--raw" in refused(f"kubectl get --raw '{bad}'"), bad


def test_normalized_form():
    command = parse("kubectl -nkube-system delete NS prod staging --wait=0")
    assert command.normalized == (
        "kubectl delete namespaces/prod namespaces/staging --namespace=kube-system --wait=false"
    )
    exec_command = parse("kubectl exec -it web -- sh -c id")
    assert exec_command.normalized == "kubectl exec pods/web --stdin=true --tty=true -- sh -c id"


def test_file_kinds_and_inspection():
    command = parse("kubectl apply -f ./a.yaml")
    assert command.needs_inspection is True
    inspected = command.with_file_kinds([ResourceRef("clusterroles", "x")])
    assert inspected.needs_inspection is False
    assert "clusterroles" in inspected.kinds
    assert inspected.targets == (ResourceRef("clusterroles", "x"),)
    assert parse("kubectl get po").needs_inspection is False
    assert parse("helm install web ./chart").needs_inspection is True


# Paths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "files", "local"),
    [
        ("kubectl apply -f a.yaml", ("a.yaml",), ()),
        ("kubectl apply -f a.yaml,b.yaml -f c", ("a.yaml", "b.yaml", "c"), ()),
        ("kubectl apply -f=a.yaml", ("a.yaml",), ()),
        ("kubectl apply -fa.yaml", ("a.yaml",), ()),
        ("kubectl apply -k ./overlay", ("./overlay",), ()),
        ("kubectl create cm x --from-file=k=./a,./b", (), ("./a", "./b")),
        ("kubectl create cm x --from-env-file=./e", (), ("./e",)),
        ("kubectl create secret tls x --cert=./c --key=./k", (), ("./c", "./k")),
        ("kubectl patch deploy x --patch-file=./p.json", (), ("./p.json",)),
        ("kubectl get po -o jsonpath-file=./t", (), ("./t",)),
        ("kubectl get po -o templatefile --template=./t", (), ("./t",)),
        ("kubectl cluster-info dump --output-directory=./dump", (), ("./dump",)),
        ("kubectl kustomize ./overlay -o ./out.yaml", (), ("./overlay", "./out.yaml")),
        ("helm install web ./chart -f v.yaml,w.yaml", (), ("v.yaml", "w.yaml", "./chart")),
        ("helm install web ./chart --set-file a=./x,b=./y", (), ("./x", "./y", "./chart")),
        ("helm template ./chart --output-dir ./out", (), ("./out", "./chart")),
        ("helm lint ./a ./b", (), ("./a", "./b")),
        ("helm package ./chart -d ./dist", (), ("./chart", "./dist")),
    ],
)
def test_local_paths_are_collected(line: str, files: tuple[str, ...], local: tuple[str, ...]):
    command = parse(line, workspace=WS)
    assert command.files == files
    assert sorted(command.local_paths) == sorted(local)


@pytest.mark.parametrize(
    ("path", "resolved"),
    [
        ("a.yaml", "/work/session/a.yaml"),
        ("./a/../b.yaml", "/work/session/b.yaml"),
        (".", "/work/session"),
        ("/work/session/x", "/work/session/x"),
        ("a//b", "/work/session/a/b"),
    ],
)
def test_resolve_in_workspace(path: str, resolved: str):
    assert resolve_in_workspace(path, WS) == PurePosixPath(resolved)
    assert resolve_in_workspace(path, "/work/session/") == PurePosixPath(resolved)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "empty path"),
        ("-", "standard input"),
        ("../x", "outside"),
        ("a/../../x", "outside"),
        ("/etc/passwd", "outside"),
        ("/work/session-other/x", "outside"),
        ("/work", "outside"),
        ("//work/session/x", "outside"),
        ("https://evil/x.yaml", "URLs"),
        ("s3://bucket/x", "URLs"),
    ],
)
def test_resolve_outside_workspace(path: str, fragment: str):
    with pytest.raises(CommandRefused) as info:
        resolve_in_workspace(path, WS)
    assert fragment in info.value.reason


def test_workspace_must_be_absolute():
    with pytest.raises(CommandRefused, match="absolute"):
        resolve_in_workspace("a", "relative/ws")


def test_check_paths_covers_every_path():
    command = parse("kubectl apply -f ./ok.yaml,/etc/shadow")
    with pytest.raises(CommandRefused, match="outside"):
        check_paths(command, WS)
    with pytest.raises(CommandRefused, match="outside"):
        parse("kubectl cp web:/etc/shadow /tmp/shadow", workspace=WS)
    with pytest.raises(CommandRefused, match="quoted list"):
        parse("kubectl apply -f '\"a,b\"'")
    assert "invalid --from-file" in refused("kubectl create cm x --from-file=a=b=c")


# helm -------------------------------------------------------------------------------------------


def test_helm_install_forms():
    command = parse("helm install web ./chart -n apps --dry-run")
    assert command.resources == (ResourceRef("releases", "web"),)
    assert command.chart == "./chart"
    assert command.namespace == "apps"
    assert command.dry_run == "client"
    assert parse("helm install ./chart --generate-name").resources == ()
    assert parse("helm template ./chart").chart == "./chart"
    assert parse("helm template web ./chart").resources == (ResourceRef("releases", "web"),)
    assert parse("helm upgrade --install web /work/session/chart").chart == "/work/session/chart"
    assert "takes [NAME] CHART" in refused("helm install ./chart")
    assert parse("helm uninstall a b").resources == (
        ResourceRef("releases", "a"),
        ResourceRef("releases", "b"),
    )
    assert parse("helm rollback web 3").args == ("3",)
    assert parse("helm uninstall web --dry-run").dry_run == "client"
    assert parse("helm list -A").all_namespaces is True


@pytest.mark.parametrize(
    ("chart", "fragment"),
    [
        ("bitnami/nginx", "only local charts"),
        ("nginx", "only local charts"),
        ("oci://registry/chart", "oci://"),
        ("oci:registry/chart", "oci://"),
        ("https://evil/c.tgz", "URLs"),
        ("file:///etc", "URLs"),
    ],
)
def test_helm_chart_references(chart: str, fragment: str):
    assert fragment in refused(f"helm install web {chart}")
    assert fragment in refused(f"helm show values {chart}")


@pytest.mark.parametrize(
    "flags",
    [
        "--repo https://x",
        "--post-renderer ./x",
        "--post-renderer-args a",
        "--username u",
        "--password p",
        "--ca-file ./c",
        "--plain-http",
        "--dependency-update",
        "--pass-credentials",
    ],
)
def test_helm_remote_and_exec_flags(flags: str):
    assert "not allowed" in refused(f"helm install web ./chart {flags}")


def test_helm_values_urls_and_set_file():
    assert "URLs" in refused("helm install web ./chart -f https://x/v.yaml", workspace=WS)
    assert "outside" in refused("helm install web ./chart --set-file a=/etc/shadow", workspace=WS)
    assert "KEY=PATH" in refused("helm install web ./chart --set-file 'a={x}'")
    assert "invalid --set-file" in refused("helm install web ./chart --set-file ./x")


# Tables ----------------------------------------------------------------------------------------


def test_known_and_canonical_command_paths():
    kubectl = known_command_paths("kubectl")
    assert ("rollout", "undo") in kubectl
    assert ("debug", "node") in kubectl
    assert ("create", "secret", "generic") in kubectl
    assert ("uninstall",) in known_command_paths("helm")
    assert canonical_command_path("kubectl", ["create", "cm"]) == ("create", "configmap")
    assert canonical_command_path("helm", ["delete"]) == ("uninstall",)
    assert canonical_command_path("kubectl", ["debug", "node"]) == ("debug", "node")
    assert canonical_command_path("kubectl", ["frob"]) is None
    assert canonical_command_path("kubectl", []) is None


# Properties ------------------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "kubectl",
        "get",
        "delete",
        "ns",
        "po",
        "prod",
        "-n",
        "x",
        "--all",
        "-A",
        "-o",
        "yaml",
        "--",
        "-",
        "=",
        "-n=",
        "--namespace",
        "-it",
        "exec",
        "rollout",
        "undo",
        "create",
        "secret",
        "generic",
        "--from-file",
        "a=b",
        "/",
        "po/x",
        ",",
        "--raw",
        "/api/v1/pods",
        "--replicas",
        "0x",
        "-f",
        "a.yaml",
        "helm",
        "install",
        "./c",
        "--dry-run",
        "cp",
        "a:b",
        "debug",
        "node/n",
        "--overrides",
        "{}",
        "",
        "-v",
        "9",
        "--as",
        "é",
    ]
)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(["kubectl", "helm"]), st.lists(_WORDS | st.text(max_size=8), max_size=12))
def test_random_argv_never_crashes(tool: str, args: list[str]):
    try:
        command = parse_command([tool, *args], workspace=WS)
    except CommandRefused:
        return
    assert command.tool == tool
    assert command.normalized.startswith(tool)
    assert isinstance(command.bulk, bool)


# Differential check against the real kubectl ------------------------------------------------

KUBECTL = shutil.which("kubectl")


_UNREACHABLE_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: nobody, user: {}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
"""


def _kubectl_finds_plugin(args: list[str], home: Path) -> bool:
    """Whether the real kubectl treats this argv as a plugin or unknown command. Its only
    cluster is a closed local port: nothing can be reached."""
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(_UNREACHABLE_KUBECONFIG, encoding="utf-8")
    env = {
        "HOME": str(home),
        "KUBECONFIG": str(kubeconfig),
        "PATH": os.path.dirname(KUBECTL or ""),
    }
    result = subprocess.run(
        [KUBECTL or "kubectl", *args], capture_output=True, env=env, timeout=20, check=False
    )
    err = result.stderr.decode(errors="replace")
    return "plugin" in err or "unknown command" in err


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
@pytest.mark.parametrize(
    "line",
    [
        "--wait delete ns prod",
        "-h delete ns prod",
        "-i exec pod -- sh",
        "-it exec pod -- sh",
        "--replicas 0 scale deploy x",
        "-n x get po",
        "krew list",
        "--request-timeout 1s version --client",
    ],
)
def test_command_finding_matches_kubectl(line: str, tmp_path: Path):
    args = shlex.split(line)
    try:
        parse_command(["kubectl", *args])
        ours = False
    except CommandRefused as exc:
        ours = "unknown kubectl command" in exc.reason
    assert _kubectl_finds_plugin(args, tmp_path) is ours
