"""A client for a registered cluster as one of its stored system accounts, for the features that
act on a cluster in Casemate's own name (vulnerability scans and rollouts; posture's live scan
has the same need). The credential is decrypted from the vault into memory only."""

from __future__ import annotations

from casemate.errors import InvalidInput
from casemate.k8s.client import Credential, KubeClient
from casemate.k8s.clusters import Access, Clusters

__all__ = ["stored_access", "stored_client"]


def stored_access(
    clusters: Clusters, cluster: str, account: str | None = None, *, via: str
) -> tuple[str, bytes, Credential]:
    """(server, CA bundle, credential) of ``cluster``'s only system account, or the one named.
    ``via`` says which feature asks (it is recorded with the access)."""
    info = clusters.get_cluster(cluster)
    accounts = clusters.list_accounts(cluster)
    if account is None:
        if len(accounts) != 1:
            names = ", ".join(a.name for a in accounts) or "none"
            raise InvalidInput(
                f"cluster {cluster} has {len(accounts)} system accounts ({names}): "
                "name one with --account"
            )
        chosen = accounts[0]
    else:
        chosen = clusters.get_account(cluster, account)
    access = Access(
        cluster_id=info.id,
        cluster=info.name,
        server=info.server,
        ca_pem=info.ca_pem,
        account_id=chosen.id,
        account=chosen.name,
        credential_kind=chosen.kind,
        can_impersonate=chosen.can_impersonate,
        namespaces=chosen.namespaces,
        expires_at=None,
        grant_id=0,
        via=via,
    )
    return info.server, info.ca_pem.encode("ascii"), clusters.account_credential(access)


def stored_client(
    clusters: Clusters, cluster: str, account: str | None = None, *, via: str
) -> KubeClient:
    """A :class:`KubeClient` for ``cluster`` (see :func:`stored_access`)."""
    server, ca_pem, credential = stored_access(clusters, cluster, account, via=via)
    return KubeClient(server, ca_pem, credential, cluster=cluster)
