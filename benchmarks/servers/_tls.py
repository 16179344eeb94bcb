"""The benchmark servers' TLS option: ``--tls CERTFILE KEYFILE`` among a
server's arguments makes it serve TLS (wss://) with that certificate and
key (PEM files; ``run.py --tls`` makes them with the ``openssl`` command)."""

from __future__ import annotations

import ssl


def tls_files(argv: list[str]) -> tuple[list[str], tuple[str, str] | None]:
    """The arguments without ``--tls CERTFILE KEYFILE``, and the two files
    (None without the option)."""
    if "--tls" not in argv:
        return argv, None
    i = argv.index("--tls")
    if len(argv) < i + 3:
        raise SystemExit("--tls takes CERTFILE KEYFILE")
    return argv[:i] + argv[i + 3 :], (argv[i + 1], argv[i + 2])


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """An ``ssl`` server context: TLS 1.2 or later, ALPN http/1.1 (what
    roomcast's server does)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
