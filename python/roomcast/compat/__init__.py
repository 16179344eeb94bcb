"""Compatibility layers: the APIs of other WebSocket libraries, on roomcast.

One module per library, each importable on its own:

* :mod:`roomcast.compat.microsockets`: ``microsockets.Application`` (named
  events, rooms, ``before_on`` middleware);
* :mod:`roomcast.compat.pyn`: ``pyn.WebSocket`` and ``pyn.Server`` (the
  WebSocket half of pyn: ``define``, ``send``, ``send_all``);
* :mod:`roomcast.compat.nwebsocket`: ``nwebsocket.WebSocket``, the
  synchronous client with the browser's callbacks (``onopen``,
  ``onmessage``, ``onclose``, ``onerror``, ``readyState``);
* :mod:`roomcast.compat.fastapi_pubsub`: ``BasePubSubWebSocket``
  (``generate_object_to_send``, ``run``) and ``RedisCredentials``, in
  memory or across processes through roomcast's Redis backplane.

Code written for one of them changes its import and, for the servers,
since roomcast is its own server, the line that starts serving. Each module's docstring lists
where its behaviour differs from the original, and why.
"""

__all__ = ["fastapi_pubsub", "microsockets", "nwebsocket", "pyn"]
