"""Request classification: the apiserver's RequestInfoFactory, and the path tricks refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casemate.kubeproxy.classify import ApiRequest, RequestRefused, classify

# (method, target, expected fields) - expected values follow requestinfo.go and its tests
RESOURCE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    # core group, namespaced
    ("GET", "/api/v1/namespaces/a/pods", {"verb": "list", "resource": "pods", "namespace": "a"}),
    ("GET", "/api/v1/namespaces/a/pods/p1", {"verb": "get", "name": "p1", "namespace": "a"}),
    ("HEAD", "/api/v1/namespaces/a/pods/p1", {"verb": "get", "name": "p1"}),
    ("POST", "/api/v1/namespaces/a/pods", {"verb": "create", "name": "", "namespace": "a"}),
    ("PUT", "/api/v1/namespaces/a/pods/p1", {"verb": "update", "name": "p1"}),
    ("PATCH", "/api/v1/namespaces/a/pods/p1", {"verb": "patch", "name": "p1"}),
    ("DELETE", "/api/v1/namespaces/a/pods/p1", {"verb": "delete", "name": "p1"}),
    ("DELETE", "/api/v1/namespaces/a/pods", {"verb": "deletecollection", "name": ""}),
    # subresources
    (
        "GET",
        "/api/v1/namespaces/a/pods/p1/log",
        {"verb": "get", "subresource": "log", "name": "p1", "resource": "pods"},
    ),
    (
        "POST",
        "/api/v1/namespaces/a/pods/p1/exec?command=sh&command=-c&command=id",
        {"verb": "create", "subresource": "exec", "connect": "exec"},
    ),
    (
        "GET",
        "/api/v1/namespaces/a/pods/p1/exec?command=ls&stdout=true",
        {"verb": "get", "subresource": "exec", "connect": "exec"},
    ),
    (
        "POST",
        "/api/v1/namespaces/a/pods/p1/attach",
        {"verb": "create", "subresource": "attach", "connect": "attach"},
    ),
    (
        "POST",
        "/api/v1/namespaces/a/pods/p1/portforward?ports=80&ports=443",
        {"verb": "create", "subresource": "portforward", "connect": "portforward"},
    ),
    (
        "GET",
        "/api/v1/namespaces/a/services/web:80/proxy/metrics",
        {
            "verb": "get",
            "resource": "services",
            "name": "web:80",
            "subresource": "proxy",
            "connect": "proxy",
        },
    ),
    (
        "GET",
        "/api/v1/nodes/n1/proxy/configz",
        {"verb": "get", "resource": "nodes", "name": "n1", "subresource": "proxy", "namespace": ""},
    ),
    (
        "PUT",
        "/apis/apps/v1/namespaces/a/deployments/d/scale",
        {"verb": "update", "api_group": "apps", "subresource": "scale", "name": "d"},
    ),
    (
        "POST",
        "/api/v1/namespaces/a/serviceaccounts/default/token",
        {"verb": "create", "resource": "serviceaccounts", "subresource": "token"},
    ),
    # deeper paths: extra parts are not interpreted (like the apiserver)
    (
        "GET",
        "/api/v1/namespaces/a/pods/p1/proxy/x/y/z",
        {"subresource": "proxy", "parts": ("pods", "p1", "proxy", "x", "y", "z")},
    ),
    # groups and versions
    (
        "GET",
        "/apis/apps/v1/namespaces/a/deployments",
        {"verb": "list", "api_group": "apps", "version": "v1", "resource": "deployments"},
    ),
    (
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
        {"verb": "get", "api_group": "rbac.authorization.k8s.io", "resource": "clusterroles"},
    ),
    (
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"verb": "create", "resource": "selfsubjectreviews", "namespace": ""},
    ),
    # namespaces themselves
    (
        "GET",
        "/api/v1/namespaces",
        {"verb": "list", "resource": "namespaces", "namespace": "", "name": ""},
    ),
    (
        "GET",
        "/api/v1/namespaces/a",
        {"verb": "get", "resource": "namespaces", "namespace": "a", "name": "a"},
    ),
    (
        "DELETE",
        "/api/v1/namespaces/a",
        {"verb": "delete", "resource": "namespaces", "namespace": "a", "name": "a"},
    ),
    (
        "PUT",
        "/api/v1/namespaces/a/status",
        {"verb": "update", "resource": "namespaces", "name": "a", "subresource": "status"},
    ),
    (
        "PUT",
        "/api/v1/namespaces/a/finalize",
        {"verb": "update", "resource": "namespaces", "name": "a", "subresource": "finalize"},
    ),
    # cluster-wide lists of namespaced resources
    ("GET", "/api/v1/pods", {"verb": "list", "resource": "pods", "namespace": ""}),
    ("GET", "/apis/apps/v1/deployments?watch=true", {"verb": "watch", "namespace": ""}),
    # watch by query
    ("GET", "/api/v1/namespaces/a/pods?watch=1", {"verb": "watch"}),
    ("GET", "/api/v1/namespaces/a/pods?watch=true", {"verb": "watch"}),
    ("GET", "/api/v1/namespaces/a/pods?watch=", {"verb": "watch"}),  # Go: "" is true
    ("GET", "/api/v1/namespaces/a/pods?watch", {"verb": "watch"}),
    ("GET", "/api/v1/namespaces/a/pods?watch=yes", {"verb": "watch"}),
    ("GET", "/api/v1/namespaces/a/pods?watch=0", {"verb": "list"}),
    ("GET", "/api/v1/namespaces/a/pods?watch=false", {"verb": "list"}),
    ("GET", "/api/v1/namespaces/a/pods?watch=FALSE", {"verb": "list"}),
    ("GET", "/api/v1/namespaces/a/pods/p1?watch=1", {"verb": "get", "name": "p1"}),
    # single-object list/watch by field selector
    (
        "GET",
        "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dp1&watch=1",
        {"verb": "watch", "name": "p1", "name_from_selector": True},
    ),
    (
        "GET",
        "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3D%3Dp1",
        {"verb": "list", "name": "p1"},
    ),
    (
        "GET",
        "/api/v1/namespaces/a/pods?fieldSelector=status.phase%3DRunning,metadata.name%3Dp2",
        {"verb": "list", "name": "p2"},
    ),
    (
        "GET",
        "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%21%3Dp1",
        {"verb": "list", "name": ""},
    ),
    (
        "DELETE",
        "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dp1",
        {"verb": "deletecollection", "name": ""},  # only get becomes list/watch
    ),
    # deprecated verb-via-path forms
    (
        "GET",
        "/api/v1/watch/namespaces/a/pods",
        {"verb": "watch", "resource": "pods", "namespace": "a", "verb_via_path": True},
    ),
    ("GET", "/api/v1/watch/namespaces/a/pods/p1", {"verb": "watch", "name": "p1"}),
    ("GET", "/api/v1/watch/pods", {"verb": "watch", "namespace": ""}),
    (
        "GET",
        "/api/v1/proxy/namespaces/a/pods/p1/x/y",
        {"verb": "proxy", "name": "p1", "subresource": "", "connect": "proxy"},
    ),
    # dry-run
    ("POST", "/api/v1/namespaces/a/pods?dryRun=All", {"verb": "create", "dry_run": True}),
    ("POST", "/api/v1/namespaces/a/pods", {"verb": "create", "dry_run": False}),
    # custom resources
    (
        "GET",
        "/apis/example.com/v1/namespaces/a/widgets/w",
        {"verb": "get", "api_group": "example.com", "resource": "widgets"},
    ),
    (
        "POST",
        "/apis/example.com/v1/gadgets",
        {"verb": "create", "resource": "gadgets", "namespace": ""},
    ),
    # odd but real: a "namespaces" segment at the end
    (
        "GET",
        "/apis/apps/v1/namespaces/a/namespaces",
        {"verb": "list", "resource": "namespaces", "namespace": "a"},
    ),
]


@pytest.mark.parametrize(("method", "target", "expected"), RESOURCE_CASES)
def test_resource_requests(method: str, target: str, expected: dict[str, Any]) -> None:
    req = classify(method, target)
    assert req.is_resource
    for key, value in expected.items():
        assert getattr(req, key) == value, f"{key}: {getattr(req, key)!r} != {value!r}"


@pytest.mark.parametrize(
    ("method", "target", "verb"),
    [
        ("GET", "/", "get"),
        ("GET", "/api", "get"),
        ("GET", "/api/v1", "get"),
        ("GET", "/apis", "get"),
        ("GET", "/apis/apps", "get"),
        ("GET", "/apis/apps/v1", "get"),
        ("GET", "/version", "get"),
        ("GET", "/version?timeout=32s", "get"),
        ("GET", "/openapi/v2", "get"),
        ("GET", "/openapi/v3/apis/apps/v1?hash=ABC", "get"),
        ("GET", "/healthz", "get"),
        ("GET", "/readyz/etcd", "get"),
        ("GET", "/metrics", "get"),
        ("POST", "/logs", "post"),
        ("HEAD", "/livez", "head"),
        ("GET", "/foo/bar/baz", "get"),  # unknown prefix: non-resource, as in Go
    ],
)
def test_non_resource_requests(method: str, target: str, verb: str) -> None:
    req = classify(method, target)
    assert not req.is_resource
    assert req.verb == verb
    assert req.resource == req.namespace == req.name == ""
    assert req.connect == ""
    assert not req.is_write


@pytest.mark.parametrize(
    ("method", "target", "why"),
    [
        ("GET", "/api/v1/namespaces/a/../b/pods", "dot segments"),
        ("GET", "/api/v1/namespaces/a/./pods", "dot segments"),
        ("GET", "/api/v1/namespaces/a/pods/..", "dot segments"),
        ("GET", "/api/v1/namespaces/a/%2e%2e/pods", "percent-escape"),
        ("GET", "/api/v1/namespaces/a/%2E/pods", "percent-escape"),
        ("GET", "/api/v1/namespaces/a%2Fb/pods", "percent-escape"),
        ("GET", "/api/v1/namespaces/a%2fb/pods", "percent-escape"),
        ("GET", "/api/v1/namespaces/a%5Cb/pods", "percent-escape"),
        ("GET", "/api/v1/namespaces/a%25/pods", "percent-escape"),
        ("GET", "/api/v1/namespaces/%61/pods", "percent-escape"),  # unreserved "a"
        ("GET", "/api/v1/namespaces/a%00/pods", "percent-escape"),
        ("GET", "/api/v1/namespaces/a%/pods", "malformed"),
        ("GET", "/api/v1/namespaces/a%zz/pods", "malformed"),
        ("GET", "/api/v1/namespaces/a%c3/pods", "UTF-8"),
        ("GET", "/api/v1//namespaces/a/pods", "empty path segments"),
        ("GET", "//api/v1/pods", "empty path segments"),
        ("GET", "/api/v1/namespaces/a/pods/", "empty path segments"),
        ("GET", "/api/v1/namespaces/a/pods\\x", "must be percent-encoded"),
        ("GET", "/api/v1/namespaces/a/pods x", "must be percent-encoded"),
        ("GET", "/api/v1/namespaces/ä/pods", "must be percent-encoded"),
        ("GET", "/api/v1/namespaces/a/pods#frag", "must be percent-encoded"),
        ("GET", "http://evil/api/v1/pods", "absolute path"),
        ("GET", "*", "absolute path"),
        ("GET", "api/v1/pods", "absolute path"),
        ("GET", "/api/v1/namespaces/a/pods?watch=1;x=y", "';'"),
        ("GET", "/api/v1/namespaces/a/pods?watch=1&watch=0", "more than once"),
        ("GET", "/api/v1/namespaces/a/pods?fieldSelector=a&fieldSelector=b", "more than once"),
        ("GET", "/api/v1/namespaces/a/pods?watch=%zz", "malformed"),
        ("GET", "/api/v1/namespaces/a/pods?x=a b", "must be percent-encoded"),
        ("GET", "/api/v1/namespaces/a/pods?x=%ff", "UTF-8"),
        ("GET", "/api/v1/watch", "unable to determine"),
        ("GET", "/apis/apps/v1/proxy", "unable to determine"),
        ("OPTIONS", "/api/v1/pods", "method"),
        ("CONNECT", "/api/v1/pods", "method"),
        ("TRACE", "/", "method"),
        ("GET", "/" + "a" * 9000, "longer than"),
    ],
)
def test_tricks_are_refused(method: str, target: str, why: str) -> None:
    with pytest.raises(RequestRefused, match=why) as info:
        classify(method, target)
    assert info.value.status == 400


def test_allowed_escapes_decode_like_go() -> None:
    # a reserved character escaped is what Go decodes too: same segment for both
    req = classify("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aadmin")
    assert req.name == "system:admin"
    assert req.path == "/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aadmin"
    assert classify("GET", "/apis/r/v1/roles/caf%C3%A9").name == "café"


def test_query_is_decoded_and_kept_verbatim_for_forwarding() -> None:
    target = "/api/v1/namespaces/a/pods?labelSelector=app%3Dweb%2Ctier+in+%28a%29&limit=500"
    req = classify("GET", target)
    assert req.param("labelSelector") == "app=web,tier in (a)"
    assert req.param("limit") == "500"
    assert req.param("nope") is None
    assert req.target == target
    assert classify("GET", "/api/v1/namespaces/a/pods").target == "/api/v1/namespaces/a/pods"


def test_repeatable_parameters() -> None:
    req = classify("POST", "/api/v1/namespaces/a/pods/p/exec?command=sh&command=-c&command=id")
    assert req.params("command") == ("sh", "-c", "id")
    assert req.param("command") == "sh"
    req = classify("GET", "/api/v1/namespaces/a/pods/p/portforward?ports=1&ports=2")
    assert req.params("ports") == ("1", "2")


def test_empty_query_pairs_are_skipped_like_go() -> None:
    req = classify("GET", "/api/v1/namespaces/a/pods?&&watch=1&")
    assert req.verb == "watch"
    assert classify("GET", "/api/v1/namespaces/a/pods?=x").verb == "list"


@pytest.mark.parametrize(
    ("target", "scope_guess", "all_namespaces"),
    [
        ("/api/v1/namespaces/a/pods", False, False),
        ("/api/v1/pods", False, True),
        ("/api/v1/nodes", True, False),
        ("/api/v1/namespaces", True, False),
        ("/api/v1/namespaces/a", True, False),  # the namespace object is cluster-scoped
        ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/x", True, False),
        ("/apis/rbac.authorization.k8s.io/v1/rolebindings", False, True),
        ("/apis/example.com/v1/widgets", True, False),  # unknown without namespace: guessed
        ("/apis/example.com/v1/namespaces/a/widgets", False, False),
        ("/version", False, False),
    ],
)
def test_cluster_scope_guess(target: str, scope_guess: bool, all_namespaces: bool) -> None:
    req = classify("GET", target)
    assert req.is_cluster_scoped_guess is scope_guess
    assert req.all_namespaces is all_namespaces


@pytest.mark.parametrize(
    ("method", "target", "write", "read"),
    [
        ("GET", "/api/v1/namespaces/a/pods", False, True),
        ("GET", "/api/v1/namespaces/a/pods?watch=1", False, True),
        ("POST", "/api/v1/namespaces/a/pods", True, False),
        ("DELETE", "/api/v1/namespaces/a/pods", True, False),
        ("POST", "/api/v1/namespaces/a/pods/p/exec", False, False),  # connect: neither
        ("GET", "/api/v1/namespaces/a/pods/p/exec", False, False),
        ("POST", "/version", False, False),
    ],
)
def test_read_and_write(method: str, target: str, write: bool, read: bool) -> None:
    req = classify(method, target)
    assert req.is_write is write
    assert req.is_read is read


@pytest.mark.parametrize(
    ("method", "target", "text"),
    [
        ("DELETE", "/api/v1/namespaces/a", "delete namespaces a"),
        ("GET", "/api/v1/namespaces/b/pods", "list pods -n b"),
        ("POST", "/api/v1/namespaces/a/pods/p/exec", "create pods/exec p -n a"),
        ("GET", "/apis/apps/v1/namespaces/a/deployments/d", "get deployments.apps d -n a"),
        ("GET", "/version", "get /version"),
    ],
)
def test_describe(method: str, target: str, text: str) -> None:
    assert classify(method, target).describe() == text


def test_method_is_case_insensitive() -> None:
    assert classify("get", "/api/v1/pods").verb == "list"


def test_request_is_frozen() -> None:
    req = classify("GET", "/api/v1/pods")
    with pytest.raises(AttributeError):
        req.verb = "delete"  # type: ignore[misc]
    assert isinstance(req, ApiRequest)


# Properties -----------------------------------------------------------------------------------

_SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.:", min_size=1, max_size=12)


@given(st.lists(_SEGMENT, min_size=1, max_size=8), st.sampled_from(sorted({"GET", "POST"})))
def test_accepted_paths_have_no_dot_or_empty_segments(parts: list[str], method: str) -> None:
    target = "/" + "/".join(parts)
    try:
        req = classify(method, target)
    except RequestRefused:
        assert any(p in (".", "..") for p in parts)
        return
    assert req.path == target
    assert all(p not in ("", ".", "..") for p in req.path[1:].split("/"))


@given(st.text(max_size=60))
def test_classify_never_crashes(target: str) -> None:
    try:
        req = classify("GET", "/" + target)
    except RequestRefused:
        return
    assert req.verb
    # what was accepted is forwarded verbatim (an empty query is dropped)
    assert req.target == ("/" + target).removesuffix("?")


@given(st.lists(_SEGMENT, min_size=2, max_size=4))
def test_namespace_is_never_a_path_separator(names: list[str]) -> None:
    with pytest.raises(RequestRefused):
        classify("GET", f"/api/v1/namespaces/{'%2F'.join(names)}/pods")
