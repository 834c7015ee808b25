"""Shapes of the Docker request bodies whose fields the policy reads.

Only the structure down to the fields :mod:`casemate.edge.decide` checks is described; anything
else is left as the client spelled it (dockerd folds it itself and the policy never reads it).
Field names are Docker's canonical JSON names (moby ``api/types``).
"""

from __future__ import annotations

from typing import Final

from casemate.edge.gojson import LEAF, ListOf, MapOf, Struct

MAP: Final = MapOf(LEAF)

DRIVER_CONFIG: Final = Struct.of("Name", Options=MAP)

MOUNT: Final = Struct.of(
    "Type",
    "Source",
    "Target",
    "ReadOnly",
    "Consistency",
    BindOptions=Struct.of(
        "Propagation",
        "NonRecursive",
        "CreateMountpoint",
        "ReadOnlyNonRecursive",
        "ReadOnlyForceRecursive",
    ),
    VolumeOptions=Struct.of("NoCopy", "Subpath", Labels=MAP, DriverConfig=DRIVER_CONFIG),
    TmpfsOptions=Struct.of("SizeBytes", "Mode", "Options"),
)

RESOURCES: Final = Struct.of(
    "CgroupParent",
    "DeviceCgroupRules",
    "OomKillDisable",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "PidsLimit",
    Devices=ListOf(Struct.of("PathOnHost", "PathInContainer", "CgroupPermissions")),
    DeviceRequests=ListOf(Struct.of("Driver", "Count", "DeviceIDs", "Capabilities", Options=MAP)),
)

HOST_CONFIG: Final = RESOURCES.merged(
    Struct.of(
        "Binds",
        "Privileged",
        "CapAdd",
        "CapDrop",
        "Capabilities",
        "PidMode",
        "IpcMode",
        "UTSMode",
        "UsernsMode",
        "CgroupnsMode",
        "Cgroup",
        "NetworkMode",
        "SecurityOpt",
        "MaskedPaths",
        "ReadonlyPaths",
        "VolumesFrom",
        "VolumeDriver",
        "Runtime",
        "OomScoreAdj",
        "Init",
        "ExtraHosts",
        "Links",
        "AutoRemove",
        "ReadonlyRootfs",
        Mounts=ListOf(MOUNT),
        Sysctls=MAP,
        Tmpfs=MAP,
        PortBindings=MAP,
        Annotations=MAP,
        StorageOpt=MAP,
        LogConfig=Struct.of("Type", Config=MAP),
        RestartPolicy=Struct.of("Name", "MaximumRetryCount"),
    )
)

CONTAINER_CONFIG: Final = Struct.of(
    "Hostname",
    "Domainname",
    "User",
    "Image",
    "Cmd",
    "Entrypoint",
    "Env",
    "WorkingDir",
    "StopSignal",
    Labels=MAP,
    Volumes=MAP,
    ExposedPorts=MAP,
)

# ContainerConfigWrapper embeds Config and (for legacy clients) *HostConfig at the top level,
# next to the real "HostConfig": dockerd reads host settings from the top level when
# "HostConfig" is absent or null. The policy therefore checks both places.
CONTAINER_CREATE: Final = CONTAINER_CONFIG.merged(HOST_CONFIG).merged(
    Struct.of(
        HostConfig=HOST_CONFIG,
        NetworkingConfig=Struct.of(EndpointsConfig=MapOf(LEAF)),
    )
)

CONTAINER_UPDATE: Final = RESOURCES.merged(
    Struct.of(RestartPolicy=Struct.of("Name", "MaximumRetryCount"))
)

EXEC_CREATE: Final = Struct.of(
    "User",
    "Privileged",
    "Tty",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Detach",
    "DetachKeys",
    "Env",
    "WorkingDir",
    "Cmd",
    "ConsoleSize",
)

EXEC_START: Final = Struct.of("Detach", "Tty", "ConsoleSize")

VOLUME_CREATE: Final = Struct.of("Name", "Driver", "ClusterVolumeSpec", DriverOpts=MAP, Labels=MAP)

CONTAINER_SPEC: Final = Struct.of(
    "Image",
    "User",
    "CapabilityAdd",
    "CapabilityDrop",
    "Isolation",
    "Init",
    Privileges=Struct.of(
        "CredentialSpec",
        "NoNewPrivileges",
        SELinuxContext=Struct.of("Disable", "User", "Role", "Type", "Level"),
        Seccomp=Struct.of("Mode", "Profile"),
        AppArmor=Struct.of("Mode"),
    ),
    Sysctls=MAP,
    Mounts=ListOf(MOUNT),
    Labels=MAP,
)

NETWORK_ATTACHMENT: Final = ListOf(Struct.of("Target", "Aliases", DriverOpts=MAP))

SERVICE_SPEC: Final = Struct.of(
    "Name",
    "Mode",
    "UpdateConfig",
    "RollbackConfig",
    "EndpointSpec",
    Labels=MAP,
    TaskTemplate=Struct.of(
        "Resources",
        "RestartPolicy",
        "Placement",
        "Runtime",
        ContainerSpec=CONTAINER_SPEC,
        PluginSpec=LEAF,
        Networks=NETWORK_ATTACHMENT,
    ),
    Networks=NETWORK_ATTACHMENT,
)

NETWORK_CREATE: Final = Struct.of(
    "Name",
    "Driver",
    "Scope",
    "Internal",
    "Attachable",
    "Ingress",
    "EnableIPv6",
    "IPAM",
    Options=MAP,
    Labels=MAP,
)
