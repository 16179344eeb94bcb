/*
 * roomcast.js: the browser client of roomcast.App, served by the app at
 * /roomcast.js. Plain JavaScript, no dependencies, no build step.
 *
 *   <script src="/roomcast.js"></script>
 *   <script>
 *     const socket = roomcast.connect();            // ws(s)://<this host>/
 *     socket.send("join", { room: "lobby" });       // queued until open
 *     socket.on("message", (payload) => console.log(payload));
 *     socket.on("reconnected", () => console.log("back, rooms rejoined"));
 *   </script>
 *
 * Wire: each message, both ways, is one JSON text frame
 * {"event": <string>, "payload": <any JSON>}.
 *
 * roomcast.connect(url?, options?) -> socket
 *   url      "ws://..." / "wss://...", "http(s)://..." or a path ("/events")
 *            on this page's host; default: "/" on this page's host.
 *   options  reconnect   (true)      reconnect after a close the page did
 *                                    not ask for (see below)
 *            minDelay    (250 ms)    backoff bounds: attempt n waits a random
 *            maxDelay    (10000 ms)  time in [minDelay, min(maxDelay,
 *                                    minDelay * 2^n)] ("full jitter")
 *            maxAttempts (Infinity)  attempts in a row before giving up
 *            maxQueue    (1000)      messages kept while disconnected; past
 *                                    it the oldest is dropped
 *            protocols               subprotocols, as for new WebSocket()
 *
 * socket.on(event, cb)     cb(payload, event) for each server event `event`;
 *                          several handlers per event run in order
 * socket.off(event, cb?)   removes cb, or without cb every handler of event
 * socket.send(event, payload = "")
 *                          sends the envelope; while not open (connecting,
 *                          waiting to reconnect) it is queued and sent on
 *                          the next open; after close() it is dropped
 * socket.close(code?, reason?)  closes for good: no reconnection
 * socket.readyState        0 connecting (also while waiting to reconnect),
 *                          1 open, 2 closing, 3 closed for good
 * socket.rooms             the rooms the server says this socket is in
 * socket.positions         a copy, {room: {epoch, offset}}: the last position
 *                          seen in each history room (see below)
 * socket.url, socket.protocol
 * socket.onopen / onmessage / onclose / onerror
 *                          as on a WebSocket, called with its DOM event
 *
 * Events of the connection itself come through the same on():
 *   "open"         the connection is open; payload {reconnected: bool}
 *   "close"        an open connection closed, or the client stopped (close(),
 *                  or it gave up); payload {code, reason, wasClean,
 *                  willReconnect}. A failed attempt fires "error", not "close".
 *   "reconnect"    reconnection attempt n (1, 2, ...) is scheduled; payload n
 *   "reconnected"  open again after a drop; payload: the attempts it took
 *   "error"        payload {message}: a transport error, or a message the
 *                  client could not read. The server's own "error" events
 *                  (a bad envelope, no handler, a handler that failed)
 *                  arrive here too, with payload {message, event?}.
 *
 * Rooms survive reconnection where the app allows it: the client records
 * the server's "roomcast:joined" / "roomcast:left" events (also delivered
 * to on()), and once open again it sends "roomcast:rejoin" with those
 * rooms, then the queued messages, then fires "open" and "reconnected".
 * The server lets it back into the rooms its app's on_rejoin handler
 * allows and answers "roomcast:left" for the others, so socket.rooms stays
 * true. The page does not
 * reconnect after close(), nor when the server closed with 1000 (it ended the
 * session on purpose) or 1008 (policy violation: it would refuse again).
 *
 * Nothing missed across a reconnection, in rooms with history (the app's
 * keep_history): each event of such a room carries its position,
 * "position": {room, epoch, offset}, and after a join the server sends
 * "roomcast:position" with the room's position (also delivered to on()).
 * The client keeps the last position of each room (socket.positions;
 * "roomcast:left" forgets it) and rejoins such a room with
 * {room, epoch, offset} instead of its name: the server replays the
 * events missed since, in order, then answers "roomcast:position" with
 * {room, epoch, offset, recovered: true, missed: n}, or
 * {..., recovered: false, reason} when it could not (the history no
 * longer reaches back that far, or was lost: the page should reload its
 * state), then the live events. Rooms without a known position are
 * rejoined by name, as a server without history expects.
 *
 * microsockets pages: MicroSocket(url, protocols?) returns the same kind of
 * socket, with on/off/send(event, payload) and the WebSocket properties such
 * pages use; handlers also get the MessageEvent as a third argument. It does
 * not reconnect unless asked: MicroSocket(url, protocols, {reconnect: true}).
 */
(function (global) {
  "use strict";

  const CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;
  const JOINED = "roomcast:joined", LEFT = "roomcast:left", REJOIN = "roomcast:rejoin";
  const POSITION = "roomcast:position";

  // A position as the server sends it, {room, epoch, offset}; null for
  // anything else (the client then ignores it).
  function readPosition(value) {
    if (!value || typeof value !== "object") return null;
    const { room, epoch, offset } = value;
    if (typeof room !== "string" || typeof epoch !== "string") return null;
    if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) return null;
    return { room: room, epoch: epoch, offset: offset };
  }

  function resolveUrl(url) {
    const loc = global.location;
    const scheme = loc && loc.protocol === "https:" ? "wss:" : "ws:";
    if (url === undefined || url === null || url === "") url = "/";
    if (/^wss?:\/\//i.test(url)) return url;
    if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, "ws");
    return scheme + "//" + loc.host + (url.charAt(0) === "/" ? "" : "/") + url;
  }

  // A failing handler must not keep the others from running; it still
  // reaches the console, as an uncaught error would.
  function report(error) {
    if (typeof global.reportError === "function") global.reportError(error);
    else setTimeout(() => { throw error; });
  }

  function Socket(url, options) {
    const opts = Object.assign(
      { reconnect: true, minDelay: 250, maxDelay: 10000, maxAttempts: Infinity, maxQueue: 1000 },
      options || {}
    );
    const self = this;
    const handlers = new Map();
    const rooms = new Set();
    const positions = new Map(); // room -> {epoch, offset}, the last one seen
    let queue = [];
    let ws = null;
    let timer = null;
    let attempt = 0;      // attempts since the last open
    let wasOpen = false;  // opened at least once: a later open is a reconnection
    let stopped = false;  // close() was called, or the client gave up

    this.url = resolveUrl(url);
    this.onopen = this.onmessage = this.onclose = this.onerror = null;

    function emit(event, payload, domEvent) {
      const list = handlers.get(event);
      if (!list) return;
      for (const cb of list.slice()) {
        try {
          cb(payload, event, domEvent);
        } catch (error) {
          report(error);
        }
      }
    }

    function property(name, domEvent) {
      const cb = self["on" + name];
      if (typeof cb === "function") {
        try {
          cb.call(self, domEvent);
        } catch (error) {
          report(error);
        }
      }
    }

    function open() {
      timer = null;
      const current = (ws = new WebSocket(self.url, opts.protocols));
      let opened = false;
      current.onopen = (domEvent) => {
        if (current !== ws) return;
        opened = true;
        const tries = attempt;
        const reconnected = wasOpen;
        attempt = 0;
        wasOpen = true;
        // Rooms first, so that queued messages reach the rooms they were meant for.
        if (reconnected && rooms.size) current.send(JSON.stringify({ event: REJOIN, payload: rejoinList() }));
        const pending = queue;
        queue = [];
        for (const data of pending) current.send(data);
        property("open", domEvent);
        emit("open", { reconnected: reconnected });
        if (reconnected) emit("reconnected", tries);
      };
      current.onmessage = (domEvent) => {
        if (current !== ws) return;
        property("message", domEvent);
        let message;
        try {
          if (typeof domEvent.data !== "string") throw new Error("a binary frame is not an event");
          message = JSON.parse(domEvent.data);
          if (!message || typeof message !== "object" || typeof message.event !== "string") {
            throw new Error('not an {"event", "payload"} envelope');
          }
        } catch (error) {
          emit("error", { message: "unreadable message from the server: " + error.message });
          return;
        }
        const payload = message.payload === undefined ? null : message.payload;
        if (message.event === JOINED && typeof payload === "string") rooms.add(payload);
        else if (message.event === LEFT) {
          rooms.delete(payload);
          positions.delete(payload);
        } else if (message.event === POSITION) remember(readPosition(payload));
        if (message.position !== undefined) remember(readPosition(message.position));
        emit(message.event, payload, domEvent);
      };
      current.onerror = (domEvent) => {
        if (current !== ws) return;
        property("error", domEvent);
        emit("error", { message: "connection error (" + self.url + ")" });
      };
      current.onclose = (domEvent) => {
        if (current !== ws) return;
        const byServer = opened && (domEvent.code === 1000 || domEvent.code === 1008);
        if (byServer || !opts.reconnect || attempt >= opts.maxAttempts) stopped = true;
        if (stopped) queue = [];
        // A failed attempt is not a close: the page hears of the connection
        // it had, and of the end if the client gives up.
        if (opened || stopped) {
          property("close", domEvent);
          emit("close", {
            code: domEvent.code,
            reason: domEvent.reason,
            wasClean: domEvent.wasClean,
            willReconnect: !stopped,
          });
        }
        if (!stopped) schedule();
      };
    }

    function remember(position) {
      if (position !== null) positions.set(position.room, { epoch: position.epoch, offset: position.offset });
    }

    // Each room by name, or with the last position seen in it.
    function rejoinList() {
      return Array.from(rooms, (room) => {
        const known = positions.get(room);
        return known ? { room: room, epoch: known.epoch, offset: known.offset } : room;
      });
    }

    function schedule() {
      attempt += 1;
      const ceiling = Math.min(opts.maxDelay, opts.minDelay * Math.pow(2, attempt));
      const delay = opts.minDelay + Math.random() * Math.max(0, ceiling - opts.minDelay);
      timer = setTimeout(open, delay);
      emit("reconnect", attempt);
    }

    this.on = function (event, cb) {
      if (typeof cb !== "function") throw new TypeError("on(event, cb): cb must be a function");
      if (!handlers.has(event)) handlers.set(event, []);
      handlers.get(event).push(cb);
      return self;
    };

    this.off = function (event, cb) {
      const list = handlers.get(event);
      if (cb === undefined) handlers.delete(event);
      else if (list && list.indexOf(cb) >= 0) list.splice(list.indexOf(cb), 1);
      return self;
    };

    this.send = function (event, payload) {
      if (typeof event !== "string") throw new TypeError("send(event, payload): event must be a string");
      const data = JSON.stringify({ event: event, payload: payload === undefined ? "" : payload });
      if (stopped) return;
      if (ws && ws.readyState === OPEN) {
        ws.send(data);
        return;
      }
      queue.push(data);
      if (queue.length > opts.maxQueue) queue.shift();
    };

    this.close = function (code, reason) {
      if (stopped) return;
      stopped = true;
      queue = [];
      if (timer !== null) {
        // Between attempts: there is no connection to close.
        clearTimeout(timer);
        timer = null;
        ws = null;
        const info = { code: code || 1000, reason: reason || "", wasClean: true, willReconnect: false };
        emit("close", info);
        return;
      }
      if (ws && ws.readyState < CLOSING) ws.close(code === undefined ? 1000 : code, reason);
    };

    Object.defineProperties(this, {
      readyState: {
        get: () => (timer !== null ? CONNECTING : ws ? ws.readyState : CLOSED),
      },
      protocol: { get: () => (ws ? ws.protocol : "") },
      rooms: { get: () => Array.from(rooms) },
      positions: {
        get: () => {
          const copy = {};
          for (const [room, known] of positions) {
            // Defined, not assigned: a room named "__proto__" stays a key.
            const value = { epoch: known.epoch, offset: known.offset };
            Object.defineProperty(copy, room, { value: value, enumerable: true, writable: true, configurable: true });
          }
          return copy;
        },
      },
    });

    open();
  }

  Socket.CONNECTING = Socket.prototype.CONNECTING = CONNECTING;
  Socket.OPEN = Socket.prototype.OPEN = OPEN;
  Socket.CLOSING = Socket.prototype.CLOSING = CLOSING;
  Socket.CLOSED = Socket.prototype.CLOSED = CLOSED;

  function connect(url, options) {
    return new Socket(url, options);
  }

  function MicroSocket(url, protocols, options) {
    return new Socket(url, Object.assign({ reconnect: false, protocols: protocols }, options || {}));
  }

  const roomcast = { connect: connect, Socket: Socket, MicroSocket: MicroSocket };
  global.roomcast = roomcast;
  global.MicroSocket = MicroSocket;
  if (typeof module === "object" && module && module.exports) module.exports = roomcast;
})(typeof window !== "undefined" ? window : globalThis);
