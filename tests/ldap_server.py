"""A throw-away OpenLDAP server for a test: Debian's ``slapd`` run as a child process on
127.0.0.1 and a free high port, with its own config file and database under a folder of the
test, filled offline with ``slapadd``. ``.ci/run`` installs ``slapd`` and ``ldap-utils``.

    with ldap_server.running(tmp_path / "ldap", {"ou=bi": {"analyst": "pw"}}) as directory:
        directory.url        # ldap://127.0.0.1:<port>
        directory.dn("analyst", "ou=bi")
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SUFFIX = "dc=cvm,dc=test"
SCHEMAS = ("core", "cosine", "inetorgperson")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")   # Debian builds the database backends as modules
# set by .ci/run: a missing slapd fails the test instead of skipping it
REQUIRE_ENV = "CVM_TESTS_REQUIRE_LDAP"


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def require_slapd() -> None:
    """Skip (on a developer machine) or fail (in CI) when slapd or ldap-utils is missing."""
    missing = [t for t in ("slapd", "slapadd", "ldapwhoami") if _tool(t) is None]
    missing += [f"{SCHEMA_DIR}/{s}.schema" for s in SCHEMAS
                if not (SCHEMA_DIR / f"{s}.schema").is_file()]
    if not missing:
        return
    reason = (f"needs OpenLDAP's slapd and ldap-utils (missing {missing}); "
              "apt-get install slapd ldap-utils")
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set)")
    pytest.skip(reason)


def ssha(password: str) -> str:
    """An RFC 2307 ``{SSHA}`` userPassword value (salted SHA-1), as slappasswd writes it."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


@dataclass(frozen=True)
class Directory:
    """A running test directory."""

    url: str
    suffix: str = SUFFIX

    def dn(self, uid: str, branch: str) -> str:
        return f"uid={uid},{branch},{self.suffix}"

    def bind_works(self, dn: str, password: str) -> bool:
        """Does the directory accept a simple bind (``ldapwhoami``)?"""
        done = subprocess.run([_tool("ldapwhoami") or "ldapwhoami", "-x", "-H", self.url,
                               "-D", dn, "-w", password], capture_output=True, text=True,
                              timeout=30, check=False)
        return done.returncode == 0


def _ldif(users: dict[str, dict[str, str]]) -> str:
    entries = [f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
               "dc: cvm\no: cvm test"]
    for branch, people in users.items():
        entries.append(f"dn: {branch},{SUFFIX}\nobjectClass: organizationalUnit\n"
                       f"ou: {branch.split('=', 1)[1]}")
        entries += [f"dn: uid={uid},{branch},{SUFFIX}\nobjectClass: inetOrgPerson\n"
                    f"uid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {ssha(password)}"
                    for uid, password in people.items()]
    return "\n\n".join(entries) + "\n"


def _config(root: Path) -> str:
    lines = [f"include {SCHEMA_DIR}/{s}.schema" for s in SCHEMAS]
    lines += [f"pidfile {root}/slapd.pid", f"argsfile {root}/slapd.args"]
    if (MODULE_DIR / "back_mdb.la").exists() or (MODULE_DIR / "back_mdb.so").exists():
        lines += [f"modulepath {MODULE_DIR}", "moduleload back_mdb"]
    lines += ["database mdb", "maxsize 10485760", f'suffix "{SUFFIX}"',
              f"directory {root}/db",
              # passwords: only for binding; nothing else is readable without a bind
              "access to attrs=userPassword by anonymous auth by * none",
              "access to * by users read by * none"]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(root: Path, users: dict[str, dict[str, str]],
            timeout: float = 60.0) -> Iterator[Directory]:
    """Start slapd with ``users`` (``{"ou=bi": {uid: password}}``) until the block ends.

    Raises:
        RuntimeError: slapadd or slapd failed, or slapd did not answer in ``timeout``
            seconds (with slapd's output).
    """
    require_slapd()
    (root / "db").mkdir(parents=True)
    conf, ldif = root / "slapd.conf", root / "users.ldif"
    conf.write_text(_config(root))
    ldif.write_text(_ldif(users))
    added = subprocess.run([_tool("slapadd") or "slapadd", "-f", str(conf), "-l", str(ldif)],
                           capture_output=True, text=True, timeout=60, check=False)
    if added.returncode != 0:
        raise RuntimeError(f"slapadd failed: {added.stdout}{added.stderr}")
    url = f"ldap://127.0.0.1:{_free_port()}"
    log = (root / "slapd.log").open("w")
    # -d 0: stay in the foreground (a child of the test, ended below), no debug output
    proc = subprocess.Popen([_tool("slapd") or "slapd", "-f", str(conf), "-h", f"{url}/",
                             "-d", "0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(url, proc, root, timeout)
        yield Directory(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def _wait_until_up(url: str, proc: subprocess.Popen, root: Path, timeout: float) -> None:
    host, port = url.removeprefix("ldap://").split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"slapd exited with {proc.returncode}: "
                               f"{(root / 'slapd.log').read_text()}")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"slapd did not listen on {url} in {timeout:.0f}s: "
                       f"{(root / 'slapd.log').read_text()}")
