"""What changes between Pod Security Standards versions (the tables the escape rules read).

Versions are ``(major, minor)`` tuples of the Kubernetes release whose PSS behaviour applies,
as in the ``pod-security.kubernetes.io/enforce-version`` label. A rule asked for a version
before its control existed reports nothing.
"""

from __future__ import annotations

from typing import Final

Version = tuple[int, int]

#: Capabilities the baseline level lets a container add (exact spelling, as upstream).
BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)

#: Safe sysctls by the version that allowed them.
_SYSCTLS: Final[tuple[tuple[Version, frozenset[str]], ...]] = (
    (
        (1, 0),
        frozenset(
            {
                "kernel.shm_rmid_forced",
                "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range",
            }
        ),
    ),
    ((1, 27), frozenset({"net.ipv4.ip_local_reserved_ports"})),
    (
        (1, 29),
        frozenset(
            {
                "net.ipv4.tcp_keepalive_time",
                "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes",
            }
        ),
    ),
    ((1, 32), frozenset({"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"})),
    ((1, 35), frozenset({"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"})),
)

#: SELinux types a container may ask for ("" and unset are always allowed).
_SELINUX_TYPES: Final[tuple[tuple[Version, frozenset[str]], ...]] = (
    ((1, 0), frozenset({"container_t", "container_init_t", "container_kvm_t"})),
    ((1, 31), frozenset({"container_engine_t"})),
)

#: Volume types the restricted level allows.
_VOLUME_TYPES: Final[tuple[tuple[Version, frozenset[str]], ...]] = (
    (
        (1, 0),
        frozenset(
            {
                "configMap",
                "csi",
                "downwardAPI",
                "emptyDir",
                "ephemeral",
                "persistentVolumeClaim",
                "projected",
                "secret",
            }
        ),
    ),
    ((1, 35), frozenset({"image"})),
)

#: Since when each control exists (or changed).
SECCOMP_FIELDS: Final = (1, 19)
CAPABILITIES_RESTRICTED: Final = (1, 22)
RUN_AS_USER: Final = (1, 23)
WINDOWS_EXEMPTIONS: Final = (1, 25)  # restricted: seccomp, capabilities, escalation
APPARMOR_FIELDS: Final = (1, 30)
HOST_PROBES: Final = (1, 34)
PROC_MOUNT_USER_NAMESPACES: Final = (1, 35)  # baseline allows Unmasked with hostUsers: false


def _union(table: tuple[tuple[Version, frozenset[str]], ...], version: Version) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for since, names in table:
        if version >= since:
            out |= names
    return out


def allowed_sysctls(version: Version) -> frozenset[str]:
    return _union(_SYSCTLS, version)


def allowed_selinux_types(version: Version) -> frozenset[str]:
    return _union(_SELINUX_TYPES, version) | {""}


def allowed_volume_types(version: Version) -> frozenset[str]:
    return _union(_VOLUME_TYPES, version)
