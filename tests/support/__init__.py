"""Helpers the tests share; no test lives here, and pytest collects nothing
from this package.

* ``wsraw``: a raw RFC 6455 client on a blocking socket and ``ServerThread``
  (a roomcast server on its own loop in a thread).
* ``clientpeers``: servers for the client tests to talk to (a scripted raw
  TCP server, the ``websockets`` library's server, certificates).
* ``redisproc``: a real ``redis-server`` on a free port, a RESP client to
  look inside it, and a Redis that breaks the protocol on purpose.
* ``example_proc``: runs ``examples/*.py`` as their users do.
* ``polling``: ``until``, waiting for a condition inside a test's loop.
* ``deflate``: permessage-deflate on a raw client (offer, compressed
  frames both ways, a strict inflate) and generated JSON payloads.

Tests import them as ``from support import wsraw`` or
``from support.wsraw import ...``: pytest puts tests/ on ``sys.path``
(tests/conftest.py's folder, with no ``__init__.py`` above it);
tests/soak/soak.py adds tests/ itself.
"""
