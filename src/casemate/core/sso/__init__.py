"""Single sign-on: identities from an LDAP directory or an OpenID Connect provider.

``mapping`` holds the pure decisions (an external identity's Casemate name, roles and groups;
whether a local password login is allowed); ``ldap`` and ``oidc`` are the thin I/O around the
directory and the provider; ``links`` ties an external subject to a Casemate user. Logins
themselves go through :class:`casemate.core.identity.Identity`, so sessions, TOTP, lock-out
and the ``auth.login`` audit are the same for every door (see docs/sso.md).
"""
