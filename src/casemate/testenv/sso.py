"""Real single sign-on components for tests: Debian's slapd and Dex (built from Go modules).

:class:`SlapdServer` starts OpenLDAP's slapd from its own directory on two free loopback ports
(``ldap://`` with StartTLS and ``ldaps://``), with a certificate from a test CA, and loads a
small directory with slapadd before the start:

* ``dc=casemate,dc=test``; a service account ``cn=reader`` (password :data:`READER_PASSWORD`)
  that may read the directory; anonymous clients may only bind;
* people ``alice`` (groups ``admins``, ``staff``), ``bob`` (``staff``) and ``carol`` (none),
  their passwords in :data:`LDAP_PASSWORDS`.

:class:`DexServer` runs the Dex binary from the test cache (``scripts/build-testenv dex``) with
in-memory storage, one static client and one static user, serving HTTPS on a free port.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from casemate.testenv.binaries import testenv_cache_dir
from casemate.testenv.pki import _cert, _pem_key
from casemate.testenv.services import (
    LOOPBACK,
    ComponentError,
    Server,
    _binary,
    free_port,
    tcp_answers,
)

BASE_DN = "dc=casemate,dc=test"
READER_DN = f"cn=reader,{BASE_DN}"
READER_PASSWORD = "reader-Secret-4711"
LDAP_PASSWORDS = {
    "alice": "alice-Wonder-land-1",
    "bob": "bob-Builder-yes-2",
    "carol": "carol-Sings-3",
}
LDAP_GROUPS = {"admins": ("alice",), "staff": ("alice", "bob")}


def write_tls(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A test CA and a serving certificate for 127.0.0.1/localhost: (ca, cert, key) paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"casemate-test-{name}-ca", ca_key, None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
    ]
    cert = _cert(name, key, (ca, ca_key), sans)
    paths = (directory / "ca.crt", directory / f"{name}.crt", directory / f"{name}.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    return paths


def _ldif() -> str:
    def person(uid: str, password: str) -> str:
        return (
            f"dn: uid={uid},ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {uid.title()} Example\nsn: Example\ndisplayName: {uid.title()} Example\n"
            f"mail: {uid}@casemate.test\nuserPassword: {password}\n"
        )

    entries = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: casemate\n"
        "o: Casemate test\n",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {READER_PASSWORD}\n",
        f"dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups\n",
    ]
    entries += [person(uid, pw) for uid, pw in LDAP_PASSWORDS.items()]
    for cn, members in LDAP_GROUPS.items():
        lines = "".join(f"member: uid={m},ou=people,{BASE_DN}\n" for m in members)
        entries.append(
            f"dn: cn={cn},ou=groups,{BASE_DN}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}"
        )
    return "\n".join(entries)


class SlapdServer(Server):
    """OpenLDAP's slapd with a small directory (see the module docstring)."""

    name = "slapd"
    account_name = "openldap"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.ldaps_port = 0
        self.ca_file = self.dir / "tls" / "ca.crt"

    @property
    def starttls_url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    def _prepare(self, account: pwd.struct_passwd | None) -> None:
        _ca, cert, key = write_tls(self.dir / "tls", "slapd")
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        conf = self.dir / "slapd.conf"
        schema = Path("/etc/ldap/schema")
        conf.write_text(
            "".join(f"include {schema / s}.schema\n" for s in ("core", "cosine", "inetorgperson"))
            + f"pidfile {self.dir}/slapd.pid\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"TLSCACertificateFile {self.ca_file}\nTLSCertificateFile {cert}\n"
            f"TLSCertificateKeyFile {key}\n"
            "loglevel stats\n"
            "database mdb\n"
            f"suffix {BASE_DN}\nrootdn cn=admin,{BASE_DN}\n"
            f"directory {data}\nmaxsize 10485760\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            f'access to * by dn.exact="{READER_DN}" read by self read by * none\n'
        )
        ldif = self.dir / "directory.ldif"
        ldif.write_text(_ldif())
        slapadd = _binary("slapadd", "/usr/sbin/slapadd")
        done = subprocess.run(
            [slapadd, "-f", str(conf), "-l", str(ldif)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ComponentError(f"slapadd failed: {done.stderr.strip()[-2000:]}")
        if account is not None:
            for root, dirs, files in os.walk(self.dir):
                for n in dirs + files:
                    os.chown(Path(root) / n, account.pw_uid, account.pw_gid)

    def _argv(self) -> list[str]:
        self.ldaps_port = free_port()
        urls = f"ldap://{self.host}:{self.port}/ ldaps://{self.host}:{self.ldaps_port}/"
        slapd = _binary("slapd", "/usr/sbin/slapd")
        # -d: stay in the foreground, log to stderr (the log file)
        return [slapd, "-d", "stats", "-f", str(self.dir / "slapd.conf"), "-h", urls]

    def _ready(self) -> bool:
        return tcp_answers(self.port) and tcp_answers(self.ldaps_port)


DEX_VERSION = "v2.41.1"


def dex_binary() -> Path:
    """The Dex binary ``scripts/build-testenv dex`` built."""
    path = testenv_cache_dir() / f"dex-{DEX_VERSION}" / "dex"
    if not os.access(path, os.X_OK):
        raise ComponentError(f"{path} is missing; run scripts/build-testenv dex")
    return path


class DexServer(Server):
    """Dex, an OpenID provider: in-memory storage, one static client (``client_id``,
    ``client_secret``, ``redirect_uris``) and one static password user (``user_email`` /
    ``user_password``, username ``user_name``, no groups), HTTPS with a test CA (``ca_file``).

    With ``slapd``, Dex also has an LDAP connector (id ``ldap``) to that directory: its people
    log in with their uid and password and their ID tokens carry their groups (``cn``). Two
    connectors make Dex show a chooser first; ``connector_id=local`` or ``=ldap`` in the
    authorization request skips it."""

    name = "dex"
    account_name = "nobody"
    client_id = "casemate"
    client_secret = "dex-client-Secret-0815"
    user_email = "dora@casemate.test"
    user_name = "dora"
    user_password = "dora-Explorer-5"
    user_id = "0b1f6c38-4f0a-4c43-9a5f-6ad1e0d1c0de"

    def __init__(
        self, directory: Path, redirect_uris: tuple[str, ...], slapd: SlapdServer | None = None
    ) -> None:
        super().__init__(directory)
        self.redirect_uris = list(redirect_uris)
        self.slapd = slapd
        self.ca_file = self.dir / "tls" / "ca.crt"

    @property
    def issuer(self) -> str:
        return f"https://{self.host}:{self.port}/dex"

    def _prepare(self, account: pwd.struct_passwd | None) -> None:
        write_tls(self.dir / "tls", "dex")
        # a copy the service account can reach (the test cache may be under /root)
        shutil.copy2(dex_binary(), self.dir / "dex")
        if self.slapd is not None:  # slapd's own directory is private to its account
            shutil.copy2(self.slapd.ca_file, self.dir / "tls" / "ldap-ca.crt")
        if account is not None:
            for root, dirs, files in os.walk(self.dir):
                for n in dirs + files:
                    os.chown(Path(root) / n, account.pw_uid, account.pw_gid)
        self.ca_file.chmod(0o644)

    def _argv(self) -> list[str]:
        import bcrypt  # a test dependency: Dex keeps static passwords as bcrypt hashes

        pw_hash = bcrypt.hashpw(self.user_password.encode(), bcrypt.gensalt(rounds=10)).decode()
        config = {
            "issuer": self.issuer,
            "storage": {"type": "memory"},
            "web": {
                "https": f"{self.host}:{self.port}",
                "tlsCert": str(self.dir / "tls" / "dex.crt"),
                "tlsKey": str(self.dir / "tls" / "dex.key"),
            },
            "logger": {"level": "debug"},
            "oauth2": {"skipApprovalScreen": True, "passwordConnector": "local"},
            "expiry": {"idTokens": "10m"},
            "enablePasswordDB": True,
            "staticClients": [
                {
                    "id": self.client_id,
                    "secret": self.client_secret,
                    "name": "Casemate",
                    "redirectURIs": self.redirect_uris,
                }
            ],
            "staticPasswords": [
                {
                    "email": self.user_email,
                    "hash": pw_hash,
                    "username": self.user_name,
                    "userID": self.user_id,
                }
            ],
        }
        if self.slapd is not None:
            config["connectors"] = [self._ldap_connector(self.slapd)]
        path = self.dir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o644)
        return [str(self.dir / "dex"), "serve", str(path)]

    def _ready(self) -> bool:
        return tcp_answers(self.port)

    def _ldap_connector(self, slapd: SlapdServer) -> dict[str, Any]:
        return {
            "type": "ldap",
            "id": "ldap",
            "name": "LDAP",
            "config": {
                "host": f"{slapd.host}:{slapd.ldaps_port}",
                "rootCA": str(self.dir / "tls" / "ldap-ca.crt"),
                "bindDN": READER_DN,
                "bindPW": READER_PASSWORD,
                "usernamePrompt": "Username",
                "userSearch": {
                    "baseDN": f"ou=people,{BASE_DN}",
                    "filter": "(objectClass=inetOrgPerson)",
                    "username": "uid",
                    "idAttr": "uid",
                    "emailAttr": "mail",
                    "nameAttr": "cn",
                    "preferredUsernameAttr": "uid",
                },
                "groupSearch": {
                    "baseDN": f"ou=groups,{BASE_DN}",
                    "filter": "(objectClass=groupOfNames)",
                    "userMatchers": [{"userAttr": "DN", "groupAttr": "member"}],
                    "nameAttr": "cn",
                },
            },
        }
