"""Who may connect to ``cvm thrift`` (YAML section ``thrift``; docs/bi.md, "authentication").

The Spark Thrift Server is HiveServer2; its authentication is one of HiveServer2's methods,
chosen here and handed to the server by ``cvm_spark.serve.thrift`` as ``hive.server2.*``
settings (:meth:`ThriftConfig.hive_settings`). Without authentication (``none``, the
default) any client that reaches the port gets in under any user name, so the server may
then only listen on a loopback address (:meth:`ThriftConfig.check_listener`, called before
Spark starts). None of these settings is a secret: with LDAP the server binds to the
directory as the connecting user, with that user's password; it needs no account of its own.

The section changes nothing a run writes, so it is left out of the config fingerprint.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from cvm_spark.config.checks import ConfigError, check

THRIFT_AUTHENTICATION = ("none", "ldap", "kerberos")
# "uid=%s,ou=bi,dc=example,dc=com": a DN with the user name in place of %s
_DN = re.compile(r"[^=,]+=[^,]*(,[^=,]+=[^,]*)+")


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (``127.0.0.0/8``, ``::1``) or ``localhost``?

    Other host names count as not loopback even when they resolve to one (a name can be
    made to resolve elsewhere); an empty host is the wildcard address.
    """
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LdapConfig:
    """HiveServer2's LDAP settings: a connection is let in when the directory accepts a
    simple bind with the user's DN and the password the client sent.

    Attributes:
        url: ``ldaps://host:636`` (or ``ldap://host:389``; then passwords cross the network
            in clear between the server and the directory); several URLs separated by
            spaces are tried in turn.
        user_dn_pattern: the user's DN with ``%s`` for the name typed in the BI tool, e.g.
            ``uid=%s,ou=bi,dc=example,dc=com``; several patterns separated by ``:`` are
            tried in turn. Only entries these DNs can name get in, so a dedicated branch
            (``ou=bi``) limits access to its members.
        base_dn: shorthand for the pattern ``uid=%s,<base_dn>``; give one of the two.
    """

    url: str = ""
    user_dn_pattern: str = ""
    base_dn: str = ""

    def __post_init__(self) -> None:
        urls = self.url.split()
        check(bool(urls), "url is required with thrift.authentication: ldap "
              "(e.g. ldaps://ldap.example.com:636)")
        for url in urls:
            parsed = urlparse(url)
            check(parsed.scheme in ("ldap", "ldaps") and bool(parsed.hostname)
                  and parsed.path in ("", "/"),
                  f"url: {url!r} is not an ldap:// or ldaps:// URL of a server "
                  "(scheme://host[:port], no DN)")
        check(bool(self.user_dn_pattern) != bool(self.base_dn),
              "user_dn_pattern or base_dn: give exactly one of them, e.g. user_dn_pattern: "
              "uid=%s,ou=bi,dc=example,dc=com")
        # Spark's provider silently skips a pattern without ',' and '=' and then binds with
        # the name as typed (any DN of the directory): refuse such a pattern here.
        for pattern in filter(None, self.user_dn_pattern.split(":")):
            check("%s" in pattern and _DN.fullmatch(pattern) is not None,
                  f"user_dn_pattern: {pattern!r} must be a DN with %s for the user name, "
                  "e.g. uid=%s,ou=bi,dc=example,dc=com")
        check(not self.user_dn_pattern or all(self.user_dn_pattern.split(":")),
              "user_dn_pattern: empty pattern between ':' separators")
        check(not self.base_dn or ("%s" not in self.base_dn
                                   and _DN.fullmatch(f"uid=x,{self.base_dn}") is not None),
              f"base_dn: {self.base_dn!r} must be a DN such as ou=bi,dc=example,dc=com")

    def patterns(self) -> list[str]:
        """The DN patterns tried for a user, ``%s`` standing for the name."""
        return self.user_dn_pattern.split(":") if self.user_dn_pattern \
            else [f"uid=%s,{self.base_dn}"]


@dataclass(frozen=True)
class KerberosConfig:
    """HiveServer2's Kerberos settings (not exercised by the tests: no KDC there).

    Attributes:
        principal: the server's service principal, ``hive/_HOST@EXAMPLE.COM`` (``_HOST``
            is replaced by the server's host name).
        keytab: the keytab file holding that principal's key; readable by the server only.
    """

    principal: str = ""
    keytab: str = ""

    def __post_init__(self) -> None:
        check(re.fullmatch(r"[^/@\s]+/[^/@\s]+@[^/@\s]+", self.principal) is not None,
              "principal must be a service principal service/host@REALM, e.g. "
              f"hive/_HOST@EXAMPLE.COM, got {self.principal!r}")
        check(bool(self.keytab.strip()), "keytab (the path of the server's keytab file) is "
              "required with thrift.authentication: kerberos")


@dataclass(frozen=True)
class ThriftConfig:
    """How the Thrift server authenticates its clients.

    Attributes:
        authentication: ``none`` (the server may then listen on loopback only), ``ldap``
            or ``kerberos``.
        ldap: required with ``ldap``, refused otherwise.
        kerberos: required with ``kerberos``, refused otherwise.
    """

    authentication: str = "none"
    ldap: LdapConfig | None = None
    kerberos: KerberosConfig | None = None

    def __post_init__(self) -> None:
        check(self.authentication in THRIFT_AUTHENTICATION,
              f"authentication must be one of {list(THRIFT_AUTHENTICATION)}, "
              f"got {self.authentication!r}")
        for method in ("ldap", "kerberos"):
            given = getattr(self, method) is not None
            if self.authentication == method:
                check(given, f"{method}: the {method} settings are required with "
                      f"authentication: {method}")
            else:
                # settings of a method that is not switched on: a forgotten switch, not
                # something to ignore silently
                check(not given, f"{method}: settings given but authentication is "
                      f"{self.authentication!r}; set authentication: {method} or remove them")

    def hive_settings(self) -> dict[str, str]:
        """The HiveServer2 settings (``hive.server2.*``) of this authentication."""
        if self.ldap is not None:
            return {"hive.server2.authentication": "LDAP",
                    "hive.server2.authentication.ldap.url": self.ldap.url,
                    "hive.server2.authentication.ldap.userDNPattern":
                        ":".join(self.ldap.patterns())}
        if self.kerberos is not None:
            return {"hive.server2.authentication": "KERBEROS",
                    "hive.server2.authentication.kerberos.principal": self.kerberos.principal,
                    "hive.server2.authentication.kerberos.keytab": self.kerberos.keytab}
        return {"hive.server2.authentication": "NONE"}

    def check_listener(self, host: str) -> None:
        """Refuse to listen beyond loopback without authentication.

        Raises:
            ConfigError: ``host`` is not a loopback address and ``authentication`` is
                ``none``.
        """
        if self.authentication == "none" and not is_loopback(host):
            raise ConfigError(
                f"thrift: refusing to listen on {host or 'all interfaces'!r} without "
                "authentication: anyone who reaches the port could read every table. Set "
                "thrift.authentication to ldap (with thrift.ldap.url and "
                "thrift.ldap.user_dn_pattern) or kerberos, or listen on 127.0.0.1 "
                "(docs/bi.md, authentication)")
