"""Provisioning on the cluster: the home namespace, a ServiceAccount, RoleBindings of a
preset, a token Secret; and undoing a half-done provisioning (see ``casemate.k8s.clusters``)."""

from __future__ import annotations

import base64
import binascii
import logging
import secrets as pysecrets
import time

from casemate.errors import (
    CasemateError,
    Conflict,
    NotFound,
    UpstreamError,
)
from casemate.k8s.client import (
    KubeClient,
)
from casemate.k8s.grants import Grants
from casemate.k8s.records import (
    ACCOUNT_LABEL,
    MANAGED_BY,
)

log = logging.getLogger("casemate.k8s.clusters")


class Provisioning(Grants):
    """The Kubernetes objects behind a provisioned system account."""

    def _labels(self, name: str) -> dict[str, str]:
        return {MANAGED_BY[0]: MANAGED_BY[1], ACCOUNT_LABEL: name}

    def _ensure_home_namespace(self, client: KubeClient) -> None:
        home = self.home_namespace
        try:
            client.get(f"/api/v1/namespaces/{home}", what=f"read namespace {home}")
            return
        except NotFound:
            pass
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": home, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
        }
        try:
            client.post("/api/v1/namespaces", body, what=f"create namespace {home}")
        except Conflict:
            return  # created meanwhile (another provisioning): fine, and not ours to remove

    def _create_service_account(
        self, client: KubeClient, name: str, sa_name: str, created: list[str]
    ) -> None:
        home = self.home_namespace
        path = f"/api/v1/namespaces/{home}/serviceaccounts"
        body = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa_name, "namespace": home, "labels": self._labels(name)},
            "automountServiceAccountToken": False,
        }
        try:
            client.post(path, body, what=f"create ServiceAccount {home}/{sa_name}")
        except Conflict:
            raise Conflict(
                f"ServiceAccount {home}/{sa_name} already exists in the cluster; delete it or "
                "choose another account name"
            ) from None
        created.append(f"{path}/{sa_name}")

    def _bind(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        sa_name: str,
        preset: str,
        created: list[str],
    ) -> None:
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
        body = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": sa_name, "namespace": namespace, "labels": self._labels(name)},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": preset,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": sa_name, "namespace": self.home_namespace},
                # impersonated requests (an account allowed to impersonate names the person
                # and adds this group) get the account's roles through it
                {
                    "kind": "Group",
                    "apiGroup": "rbac.authorization.k8s.io",
                    "name": f"casemate:account:{name}",
                },
            ],
        }
        try:
            client.post(path, body, what=f"create RoleBinding {namespace}/{sa_name}")
        except Conflict:
            raise Conflict(
                f"RoleBinding {namespace}/{sa_name} already exists in the cluster; delete it "
                "or choose another account name"
            ) from None
        created.append(f"{path}/{sa_name}")

    def _new_token(
        self, client: KubeClient, name: str, home: str, sa_name: str, created: list[str]
    ) -> tuple[str, str]:
        """Create a service-account-token Secret and wait for Kubernetes to fill it in."""
        secret_name = f"{sa_name}-token-{pysecrets.token_hex(3)}"
        path = f"/api/v1/namespaces/{home}/secrets"
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": secret_name,
                "namespace": home,
                "labels": self._labels(name),
                "annotations": {"kubernetes.io/service-account.name": sa_name},
            },
        }
        client.post(path, body, what=f"create the token Secret of {sa_name}")
        created.append(f"{path}/{secret_name}")
        deadline = time.monotonic() + self.token_wait
        while True:
            secret = client.get(f"{path}/{secret_name}", what=f"read the token of {sa_name}")
            encoded = (secret.get("data") or {}).get("token")
            if isinstance(encoded, str) and encoded:
                try:
                    return secret_name, base64.b64decode(encoded, validate=True).decode("ascii")
                except (binascii.Error, ValueError):
                    raise UpstreamError(
                        f"the token Secret of {sa_name} holds no readable token"
                    ) from None
            if time.monotonic() > deadline:
                raise UpstreamError(
                    f"Kubernetes did not issue a token for {sa_name} within "
                    f"{self.token_wait:.0f}s (is the token controller of "
                    "kube-controller-manager running?)"
                )
            time.sleep(0.2)

    @staticmethod
    def _undo(client: KubeClient, created: list[str]) -> None:
        """Best effort: remove what a failed provisioning created, newest first."""
        for path in reversed(created):
            try:
                client.delete(path, what="clean up after a failed provisioning")
            except CasemateError as e:
                log.warning("could not clean up %s after a failed provisioning: %s", path, e)
        created.clear()
