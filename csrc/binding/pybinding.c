/* pybinding.c - roomcast._core: the CPython binding of the C core.
 *
 * The only file that includes Python.h. It converts arguments and events and
 * nothing more: no protocol logic, no loops over room members. Commands copy
 * their payload once (into the frame that every member will share) while
 * holding the GIL; rc_server_listen, rc_server_start and rc_server_stop run
 * with the GIL released, and the core never calls back into Python. Client
 * connections (connect) and adopted ones (adopt: a socket another server
 * accepted) use the same send/close/poll as server ones.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/rc_frame.h"
#include "proto/rc_slot.h"
#include "rc_core.h"

typedef struct {
  PyTypeObject *core_type;
} module_state;

/* The stable ABI (Py_LIMITED_API 3.10, one abi3 wheel for every CPython from
 * 3.10; setup.py): no Py_buffer (limited only from 3.11), no macros that
 * read object structs. A bytes-like argument is viewed through bytes_view:
 * bytes and bytearray in place (the GIL is held until the command has copied
 * them), any other buffer (memoryview, array) through a bytes copy in keep. */
typedef struct {
  const char *buf;
  Py_ssize_t len;
  PyObject *keep; /* owned, or NULL */
} bytes_view;

static int bytes_view_get(PyObject *o, bytes_view *v) {
  v->keep = NULL;
  if (PyBytes_Check(o)) {
    char *p;
    if (PyBytes_AsStringAndSize(o, &p, &v->len) < 0)
      return -1;
    v->buf = p;
    return 0;
  }
  if (PyByteArray_Check(o)) {
    v->buf = PyByteArray_AsString(o);
    v->len = PyByteArray_Size(o);
    return 0;
  }
  /* Only an object with the buffer protocol (PyBytes_FromObject alone would
   * also take an iterable of ints). */
  PyObject *mv = PyMemoryView_FromObject(o);
  if (mv == NULL) {
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(o), "__name__");
    if (name != NULL) {
      PyErr_Format(PyExc_TypeError,
                   "a bytes-like object is required, not '%.100S'", name);
      Py_DECREF(name);
    }
    return -1;
  }
  v->keep = PyBytes_FromObject(mv);
  Py_DECREF(mv);
  if (v->keep == NULL)
    return -1;
  v->buf = PyBytes_AsString(v->keep);
  v->len = PyBytes_Size(v->keep);
  return 0;
}

/* PySequence_Fast_GET_ITEM without the macro: seq is a list or a tuple
 * (PySequence_Fast's result). Borrowed. */
static PyObject *fast_item(PyObject *seq, Py_ssize_t i) {
  return PyList_Check(seq) ? PyList_GetItem(seq, i) : PyTuple_GetItem(seq, i);
}

typedef struct {
  PyObject_HEAD rc_server *srv;
  int started; /* listen() or start() succeeded */
  int stopped;
  int backplane; /* a Redis backplane was configured */
  /* Batching: loop.call_soon of the asyncio loop that issues commands, or
   * NULL. Commands made on that loop's thread wake the core once, from a
   * flush scheduled after the first of them; others wake it at once. */
  PyObject *call_soon;
  unsigned long loop_thread;
  int flush_scheduled;
  /* Events taken from the core but not given yet: memory ran out even for
   * the smallest form of one (see Core_poll). Given first next time. */
  rc_event *held;
  uint64_t undelivered; /* events answered here because they did not convert */
} CoreObject;

static int raise_uv(int r) {
  if (r == 0)
    return 0;
  if (r == -ENOMEM)
    PyErr_NoMemory();
  else if (r == -ECANCELED)
    PyErr_SetString(PyExc_RuntimeError, "the server has stopped");
  else if (r == -EINVAL)
    PyErr_SetString(PyExc_RuntimeError, "the server is not listening");
  else
    PyErr_Format(PyExc_OSError, "roomcast core error %d (%s)", r,
                 rc_strerror(r));
  return -1;
}

/* After a command was queued: without batching the core woke itself; with
 * it, wake the core now (another thread) or once for the batch. */
static int command_done(CoreObject *self, int r) {
  if (raise_uv(r) < 0)
    return -1;
  if (self->call_soon == NULL)
    return 0;
  if (PyThread_get_thread_ident() != self->loop_thread) {
    (void)rc_server_wake(self->srv); /* fails only once stopped */
    return 0;
  }
  if (self->flush_scheduled)
    return 0;
  PyObject *flush = PyObject_GetAttrString((PyObject *)self, "flush");
  if (flush == NULL)
    return -1;
  PyObject *handle = PyObject_CallFunctionObjArgs(self->call_soon, flush, NULL);
  Py_DECREF(flush);
  if (handle == NULL) {
    /* the loop is closed or gone: do not strand the command */
    PyErr_Clear();
    (void)rc_server_wake(self->srv);
    return 0;
  }
  Py_DECREF(handle);
  self->flush_scheduled = 1;
  return 0;
}

/* --- construction -------------------------------------------------------- */

/* The package checks every option first (roomcast/_options.py); these
 * name the option and the value for a direct caller, and keep NaN and
 * infinities, which the core cannot turn into milliseconds, out. */
static int check_size(const char *name, Py_ssize_t v, Py_ssize_t lo,
                      Py_ssize_t hi) {
  if (v >= lo && v <= hi)
    return 0;
  PyErr_Format(PyExc_ValueError, "%s must be in %zd..%zd, not %zd", name, lo,
               hi, v);
  return -1;
}

#define RC_MAX_SECONDS 1e9 /* about 31 years; as roomcast/_options.py */

static int check_secs(const char *name, double v) {
  if (v >= 0 && v <= RC_MAX_SECONDS) /* false for NaN */
    return 0;
  PyObject *f = PyFloat_FromDouble(v);
  if (f != NULL) {
    PyErr_Format(PyExc_ValueError,
                 "%s must be a number of seconds in 0..1e9, not %R", name, f);
    Py_DECREF(f);
  }
  return -1;
}

static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"max_message_size",
                           "max_queue_bytes",
                           "ping_interval",
                           "ping_timeout",
                           "handshake_timeout",
                           "close_timeout",
                           "max_header_bytes",
                           "max_headers",
                           "http_requests",
                           "max_connections",
                           "idle_timeout",
                           "drop_oldest",
                           "max_event_bytes",
                           "backplane_host",
                           "backplane_port",
                           "backplane_db",
                           "backplane_username",
                           "backplane_password",
                           "backplane_prefix",
                           "backplane_buffer",
                           "compression",
                           "compression_threshold",
                           "backplane_tls",
                           "backplane_tls_checks",
                           "backplane_tls_ca",
                           "backplane_tls_cert",
                           "backplane_tls_key",
                           "backplane_cluster",
                           NULL};
  rc_config cfg;
  rc_config_default(&cfg);
  Py_ssize_t max_msg = (Py_ssize_t)cfg.max_message_size;
  Py_ssize_t max_q = (Py_ssize_t)cfg.max_queue_bytes;
  Py_ssize_t max_hb = (Py_ssize_t)cfg.max_header_bytes;
  Py_ssize_t max_h = (Py_ssize_t)cfg.max_headers;
  int http = 0, drop = 0;
  Py_ssize_t max_conns = 0;
  Py_ssize_t max_ev = (Py_ssize_t)cfg.max_event_bytes;
  Py_ssize_t bp_buffer = (Py_ssize_t)cfg.backplane_buffer;
  int compression = cfg.compression;
  Py_ssize_t z_min = (Py_ssize_t)cfg.compression_threshold;
  int bp_tls = 0;
  rc_backplane_tls tls = {RC_BP_TLS_VERIFY, NULL, NULL, NULL};
  if (!PyArg_ParseTupleAndKeywords(
          args, kw, "|$nnddddnnpndpnziizzznpnpizzzp:Core", kwlist, &max_msg,
          &max_q, &cfg.ping_interval, &cfg.ping_timeout, &cfg.handshake_timeout,
          &cfg.close_timeout, &max_hb, &max_h, &http, &max_conns,
          &cfg.idle_timeout, &drop, &max_ev, &cfg.backplane_host,
          &cfg.backplane_port, &cfg.backplane_db, &cfg.backplane_username,
          &cfg.backplane_password, &cfg.backplane_prefix, &bp_buffer,
          &compression, &z_min, &bp_tls, &tls.checks, &tls.ca_certs,
          &tls.certfile, &tls.keyfile, &cfg.backplane_cluster))
    return NULL;
  if (cfg.backplane_cluster &&
      (cfg.backplane_host == NULL || cfg.backplane_db != 0 ||
       rc_backplane_seeds_check(cfg.backplane_host) != 0)) {
    PyErr_SetString(PyExc_ValueError,
                    "backplane_cluster: backplane_host must list the seed "
                    "nodes as host:port[,host:port...], and db must be 0");
    return NULL;
  }
  if (bp_tls && cfg.backplane_host == NULL) {
    PyErr_SetString(PyExc_ValueError, "backplane_tls needs backplane_host");
    return NULL;
  }
  if (check_size("compression_threshold", z_min, 0, PY_SSIZE_T_MAX) < 0)
    return NULL;
  cfg.compression = compression;
  cfg.compression_threshold = (size_t)z_min;
  if (cfg.backplane_host != NULL &&
      (cfg.backplane_host[0] == '\0' || cfg.backplane_port < 1 ||
       cfg.backplane_port > 65535 || cfg.backplane_db < 0 || bp_buffer < 0 ||
       (cfg.backplane_prefix != NULL && strlen(cfg.backplane_prefix) > 200))) {
    PyErr_SetString(PyExc_ValueError,
                    "backplane: the host must not be empty, the port must be "
                    "in 1..65535, db and buffer must not be negative, the "
                    "prefix at most 200 bytes");
    return NULL;
  }
  cfg.backplane_buffer = (size_t)bp_buffer;
  if (check_size("max_message_size", max_msg, 1, PY_SSIZE_T_MAX) < 0 ||
      check_size("max_queue_bytes", max_q, 1, PY_SSIZE_T_MAX) < 0 ||
      check_size("max_header_bytes", max_hb, 64, 60000) < 0 ||
      check_size("max_headers", max_h, 1, 128) < 0 ||
      check_size("max_event_bytes", max_ev, 1, PY_SSIZE_T_MAX) < 0 ||
      check_size("max_connections", max_conns, 0, PY_SSIZE_T_MAX) < 0 ||
      check_secs("ping_interval", cfg.ping_interval) < 0 ||
      check_secs("ping_timeout", cfg.ping_timeout) < 0 ||
      check_secs("handshake_timeout", cfg.handshake_timeout) < 0 ||
      check_secs("close_timeout", cfg.close_timeout) < 0 ||
      check_secs("idle_timeout", cfg.idle_timeout) < 0)
    return NULL;
  cfg.max_connections = (size_t)max_conns;
  cfg.drop_oldest = drop;
  cfg.max_event_bytes = (size_t)max_ev;
  cfg.max_message_size = (size_t)max_msg;
  cfg.max_queue_bytes = (size_t)max_q;
  cfg.max_header_bytes = (size_t)max_hb;
  cfg.max_headers = (size_t)max_h;
  cfg.http_requests = http;

  allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
  CoreObject *self = (CoreObject *)alloc(type, 0);
  if (self == NULL)
    return NULL;
  self->srv = rc_server_new(&cfg); /* copies the strings */
  if (self->srv == NULL) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  self->backplane = cfg.backplane_host != NULL;
  char err[512];
  if (bp_tls && rc_server_backplane_tls(self->srv, &tls, err, sizeof err)) {
    PyErr_Format(PyExc_ValueError, "backplane TLS: %s", err);
    Py_DECREF(self);
    return NULL;
  }
  return (PyObject *)self;
}

static void Core_dealloc(CoreObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  Py_CLEAR(self->call_soon);
  rc_events_free(self->held);
  self->held = NULL;
  if (self->srv != NULL) {
    rc_server *srv = self->srv;
    self->srv = NULL;
    Py_BEGIN_ALLOW_THREADS rc_server_free(srv);
    Py_END_ALLOW_THREADS
  }
  freefunc free_self = (freefunc)PyType_GetSlot(tp, Py_tp_free);
  free_self(self);
  Py_DECREF(tp);
}

/* --- lifecycle ----------------------------------------------------------- */

PyDoc_STRVAR(
    listen_doc,
    "listen($self, host, port, backlog=1024, reuse_port=False, /)\n--\n\n"
    "Bind, listen and start the loop thread; return the bound port.\n"
    "reuse_port: SO_REUSEPORT on the listening socket.");

static PyObject *Core_listen(CoreObject *self, PyObject *args) {
  const char *host;
  int port, backlog = 1024, reuse_port = 0;
  if (!PyArg_ParseTuple(args, "si|ip:listen", &host, &port, &backlog,
                        &reuse_port))
    return NULL;
  if (self->started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "listen() or start() was already called");
    return NULL;
  }
  if (port < 0 || port > 65535) {
    PyErr_SetString(PyExc_ValueError, "port must be in 0..65535");
    return NULL;
  }
  int bound = 0, r;
  Py_BEGIN_ALLOW_THREADS r =
      rc_server_listen_flags(self->srv, host, port, backlog,
                             reuse_port ? RC_LISTEN_REUSEPORT : 0u, &bound);
  Py_END_ALLOW_THREADS if (r != 0) {
    /* libuv's codes are negated errno values, except getaddrinfo's */
    int err = r > -3000 ? -r : 0;
    PyObject *exc = PyUnicode_FromFormat("cannot listen on %s:%d: %s", host,
                                         port, rc_strerror(r));
    if (exc != NULL) {
      PyObject *args_ =
          err ? Py_BuildValue("(iN)", err, exc) : Py_BuildValue("(N)", exc);
      if (args_ != NULL) {
        PyErr_SetObject(PyExc_OSError, args_);
        Py_DECREF(args_);
      }
    }
    return NULL;
  }
  self->started = 1;
  return PyLong_FromLong(bound);
}

PyDoc_STRVAR(start_doc,
             "start($self, /)\n--\n\n"
             "Start the loop thread without listening (client connections).");

static PyObject *Core_start(CoreObject *self, PyObject *unused) {
  (void)unused;
  if (self->started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "listen() or start() was already called");
    return NULL;
  }
  int r;
  Py_BEGIN_ALLOW_THREADS r = rc_server_start(self->srv);
  Py_END_ALLOW_THREADS if (r != 0) {
    PyErr_Format(PyExc_OSError, "cannot start the core: %s", rc_strerror(r));
    return NULL;
  }
  self->started = 1;
  Py_RETURN_NONE;
}

PyDoc_STRVAR(stop_doc,
             "stop($self, code=1001, reason='going away', /)\n--\n\n"
             "Close every connection with code and wait for the loop to end.");

/* (certfile, keyfile, password, ca_certs, cert_reqs) into t; 0 or -1. */
static int tls_args(PyObject *args, rc_server_tls *t) {
  memset(t, 0, sizeof *t);
  return PyArg_ParseTuple(args, "szzzi", &t->certfile, &t->keyfile,
                          &t->password, &t->ca_certs, &t->cert_reqs)
             ? 0
             : -1;
}

PyDoc_STRVAR(check_tls_doc,
             "check_tls(certfile, keyfile, password, ca_certs, cert_reqs)\n"
             "--\n\n"
             "Reads and checks the files; ValueError naming the file and the "
             "problem.");

static PyObject *Core_check_tls(PyObject *unused, PyObject *args) {
  (void)unused;
  rc_server_tls t;
  if (tls_args(args, &t) < 0)
    return NULL;
  char err[512];
  if (rc_tls_check(&t, err, sizeof err) != 0) {
    PyErr_SetString(PyExc_ValueError, err);
    return NULL;
  }
  Py_RETURN_NONE;
}

PyDoc_STRVAR(check_backplane_tls_doc,
             "check_backplane_tls(checks, ca_certs, certfile, keyfile)\n"
             "--\n\n"
             "Reads and checks the files of TLS to Redis; ValueError naming "
             "the file and the problem.");

static PyObject *Core_check_backplane_tls(PyObject *unused, PyObject *args) {
  (void)unused;
  rc_backplane_tls t;
  if (!PyArg_ParseTuple(args, "izzz", &t.checks, &t.ca_certs, &t.certfile,
                        &t.keyfile))
    return NULL;
  char err[512];
  if (rc_backplane_tls_check(&t, err, sizeof err) != 0) {
    PyErr_SetString(PyExc_ValueError, err);
    return NULL;
  }
  Py_RETURN_NONE;
}

PyDoc_STRVAR(set_tls_doc,
             "set_tls(certfile, keyfile, password, ca_certs, cert_reqs)\n"
             "--\n\n"
             "Serves TLS with this certificate on connections accepted from "
             "now on (before listen, or to reload); ValueError as "
             "check_tls, the certificate then unchanged.");

static PyObject *Core_set_tls(CoreObject *self, PyObject *args) {
  rc_server_tls t;
  if (tls_args(args, &t) < 0)
    return NULL;
  char err[512];
  int r;
  Py_BEGIN_ALLOW_THREADS r = rc_server_set_tls(self->srv, &t, err, sizeof err);
  Py_END_ALLOW_THREADS if (r != 0) {
    PyErr_SetString(PyExc_ValueError, err);
    return NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *Core_stop(CoreObject *self, PyObject *args) {
  int code = 1001;
  const char *reason = "going away";
  if (!PyArg_ParseTuple(args, "|is:stop", &code, &reason))
    return NULL;
  if (!rc_close_code_valid((unsigned)code)) {
    PyErr_Format(PyExc_ValueError, "invalid close code %d", code);
    return NULL;
  }
  if (self->started && !self->stopped) {
    self->stopped = 1;
    Py_BEGIN_ALLOW_THREADS rc_server_stop(self->srv, (unsigned)code, reason);
    Py_END_ALLOW_THREADS
  }
  Py_RETURN_NONE;
}

PyDoc_STRVAR(set_batching_doc,
             "set_batching($self, call_soon, /)\n--\n\n"
             "Batch the wake-ups of commands made on this thread: the first "
             "command schedules flush() with call_soon (an asyncio loop's), "
             "the others ride along. None turns batching off.");

static PyObject *Core_set_batching(CoreObject *self, PyObject *call_soon) {
  if (call_soon == Py_None) {
    Py_CLEAR(self->call_soon);
    rc_server_defer_wakeups(self->srv, 0);
    (void)rc_server_wake(self->srv);
    Py_RETURN_NONE;
  }
  if (!PyCallable_Check(call_soon)) {
    PyErr_SetString(PyExc_TypeError, "call_soon must be callable or None");
    return NULL;
  }
  Py_INCREF(call_soon);
  PyObject *old = self->call_soon;
  self->call_soon = call_soon;
  Py_XDECREF(old);
  self->loop_thread = PyThread_get_thread_ident();
  self->flush_scheduled = 0;
  rc_server_defer_wakeups(self->srv, 1);
  Py_RETURN_NONE;
}

static PyObject *Core_flush(CoreObject *self, PyObject *unused) {
  (void)unused;
  self->flush_scheduled = 0;
  (void)rc_server_wake(self->srv); /* fails only once stopped */
  Py_RETURN_NONE;
}

static PyObject *Core_idle(CoreObject *self, PyObject *unused) {
  (void)unused;
  rc_server_idle(self->srv);
  Py_RETURN_NONE;
}

static PyObject *Core_fileno(CoreObject *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromLong(rc_server_fd(self->srv));
}

/* --- events -------------------------------------------------------------- */

/* Reads the i-th length-prefixed string of an event (see rc_core.h). */
static const char *next_str(const char **p, uint32_t *len) {
  memcpy(len, *p, 4);
  const char *s = *p + 4;
  *p = s + *len;
  return s;
}

/* The headers as one bytes object, "name:value\n" per header (names
 * lower-cased; neither ':' in a name nor '\n' anywhere can occur): kept
 * per connection, it costs a tenth of a list of string pairs, and Python
 * splits it only if the application looks at the headers. p points at the
 * first of npairs name/value string pairs. */
static PyObject *headers_blob(const char **pp, uint32_t npairs) {
  const char *p = *pp, *q = p;
  size_t blob = 0;
  for (uint32_t i = 0; i < 2 * npairs; i++) {
    uint32_t l;
    (void)next_str(&q, &l);
    blob += l + 1;
  }
  PyObject *headers = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)blob);
  if (headers == NULL)
    return NULL;
  char *out = PyBytes_AsString(headers);
  for (uint32_t i = 0; i < npairs; i++) {
    uint32_t nl, vl;
    const char *n = next_str(&p, &nl);
    const char *v = next_str(&p, &vl);
    memcpy(out, n, nl);
    out[nl] = ':';
    memcpy(out + nl + 1, v, vl);
    out[nl + 1 + vl] = '\n';
    out += nl + vl + 2;
  }
  *pp = p;
  return headers;
}

/* An RC_EV_OPEN's TLS strings (from p) as (version, cipher suite, subject
 * or None, chain PEM or None), or None for a plain connection. */
static PyObject *tls_tuple(const rc_event *ev, const char *p) {
  if (ev->code != 1)
    Py_RETURN_NONE;
  uint32_t vl, cl, sl, pl;
  const char *v = next_str(&p, &vl);
  const char *c = next_str(&p, &cl);
  const char *subj = next_str(&p, &sl);
  const char *pem = next_str(&p, &pl);
  char num[16];
  int version = 0, cipher = 0;
  if (vl < sizeof num) {
    memcpy(num, v, vl);
    num[vl] = '\0';
    version = atoi(num);
  }
  if (cl < sizeof num) {
    memcpy(num, c, cl);
    num[cl] = '\0';
    cipher = atoi(num);
  }
  PyObject *subject =
      sl > 0 ? PyUnicode_DecodeUTF8(subj, sl, "replace") : Py_NewRef(Py_None);
  PyObject *chain =
      pl > 0 ? PyUnicode_DecodeLatin1(pem, pl, NULL) : Py_NewRef(Py_None);
  return Py_BuildValue("(i i N N)", version, cipher, subject, chain);
}

static PyObject *request_tuple(const rc_event *ev) {
  const char *p = ev->data;
  uint32_t ml, pl, ql, hl;
  const char *method = next_str(&p, &ml);
  const char *path = next_str(&p, &pl);
  const char *query = next_str(&p, &ql);
  const char *host = next_str(&p, &hl);
  PyObject *headers =
      headers_blob(&p, (ev->nstr - 4 - (ev->code == 1 ? 4u : 0u)) / 2);
  if (headers == NULL)
    return NULL;
  PyObject *t;
  if (ev->type == RC_EV_OPEN) {
    PyObject *tls = tls_tuple(ev, p);
    if (tls == NULL) {
      Py_DECREF(headers);
      return NULL;
    }
    t = Py_BuildValue(
        "(i K N N N N i N)", (int)ev->type, (unsigned long long)ev->conn,
        PyUnicode_DecodeLatin1(path, pl, NULL),
        PyUnicode_DecodeLatin1(query, ql, NULL), headers,
        PyUnicode_DecodeLatin1(host, hl, NULL), (int)ev->port, tls);
  } else
    t = Py_BuildValue("(i K N N N N N i)", (int)ev->type,
                      (unsigned long long)ev->conn,
                      PyUnicode_DecodeLatin1(method, ml, NULL),
                      PyUnicode_DecodeLatin1(path, pl, NULL),
                      PyUnicode_DecodeLatin1(query, ql, NULL), headers,
                      PyUnicode_DecodeLatin1(host, hl, NULL), (int)ev->port);
  return t;
}

/* One node of an RC_EV_REDIS reply (see rc_core.h) as a Python object:
 * bytes, str (status), int, None, list, or for an error a RuntimeError
 * instance (not raised). Advances *p; NULL with an exception on failure. */
static PyObject *reply_object(const char **p, const char *end) {
  if (*p >= end)
    goto short_reply;
  char type = *(*p)++;
  uint32_t n = 0;
  if (type == RC_REPLY_NIL)
    Py_RETURN_NONE;
  if (type == RC_REPLY_INTEGER) {
    int64_t v;
    if (end - *p < 8)
      goto short_reply;
    memcpy(&v, *p, 8);
    *p += 8;
    return PyLong_FromLongLong((long long)v);
  }
  if (end - *p < 4)
    goto short_reply;
  memcpy(&n, *p, 4);
  *p += 4;
  if (type == RC_REPLY_ARRAY) {
    PyObject *list = PyList_New(0);
    for (uint32_t i = 0; list != NULL && i < n; i++) {
      PyObject *item = reply_object(p, end);
      if (item == NULL || PyList_Append(list, item) < 0)
        Py_CLEAR(list);
      Py_XDECREF(item);
    }
    return list;
  }
  if ((uint32_t)(end - *p) < n)
    goto short_reply;
  const char *str = *p;
  *p += n;
  if (type == RC_REPLY_STRING)
    return PyBytes_FromStringAndSize(str, n);
  PyObject *text = PyUnicode_DecodeUTF8(str, n, "replace");
  if (text == NULL || type == RC_REPLY_STATUS)
    return text;
  PyObject *err = PyObject_CallFunctionObjArgs(PyExc_RuntimeError, text, NULL);
  Py_DECREF(text);
  return err;
short_reply:
  PyErr_SetString(PyExc_RuntimeError, "truncated Redis reply");
  return NULL;
}

/* (EV_REDIS, token, value, error): error is the message of an error reply
 * (value None), else None. */
static PyObject *redis_tuple(const rc_event *ev) {
  const char *p = ev->data;
  PyObject *value = reply_object(&p, ev->data + ev->len);
  if (value == NULL)
    return NULL;
  if (PyObject_TypeCheck(value, (PyTypeObject *)PyExc_RuntimeError)) {
    PyObject *msg = PyObject_Str(value);
    Py_DECREF(value);
    if (msg == NULL)
      return NULL;
    return Py_BuildValue("(i K O N)", (int)ev->type,
                         (unsigned long long)ev->conn, Py_None, msg);
  }
  return Py_BuildValue("(i K N O)", (int)ev->type, (unsigned long long)ev->conn,
                       value, Py_None);
}

static PyObject *event_tuple(const rc_event *ev) {
  switch (ev->type) {
  case RC_EV_REDIS:
    return redis_tuple(ev);
  case RC_EV_BACKPLANE:
    return Py_BuildValue("(i i N)", (int)ev->type, (int)ev->code,
                         PyUnicode_DecodeUTF8(ev->data, ev->len, "replace"));
  case RC_EV_RECOVER: {
    uint64_t room = 0;
    if (ev->len == sizeof(room))
      memcpy(&room, ev->data, sizeof(room));
    return Py_BuildValue("(i K i K)", (int)ev->type,
                         (unsigned long long)ev->conn, (int)ev->code,
                         (unsigned long long)room);
  }
  case RC_EV_MESSAGE:
    if (ev->is_text)
      return Py_BuildValue("(i K N)", (int)ev->type,
                           (unsigned long long)ev->conn,
                           PyUnicode_DecodeUTF8(ev->data, ev->len, NULL));
    return Py_BuildValue("(i K y#)", (int)ev->type,
                         (unsigned long long)ev->conn, ev->data,
                         (Py_ssize_t)ev->len);
  case RC_EV_CLOSE:
    return Py_BuildValue("(i K i N)", (int)ev->type,
                         (unsigned long long)ev->conn, (int)ev->code,
                         PyUnicode_DecodeUTF8(ev->data, ev->len, "replace"));
  case RC_EV_CONNECTED: {
    const char *p = ev->data;
    uint32_t sl;
    const char *sub = next_str(&p, &sl);
    return Py_BuildValue("(i K N N)", (int)ev->type,
                         (unsigned long long)ev->conn,
                         PyUnicode_DecodeLatin1(sub, sl, NULL),
                         headers_blob(&p, (ev->nstr - 1) / 2));
  }
  default:
    return request_tuple(ev);
  }
}

/* An event that did not convert (memory ran out, most likely for a large
 * message) must still be answered, or its connection hangs: an upgrade or
 * a request gets HTTP 500, a message or a client's open closes the
 * connection with 1011 (its RC_EV_CLOSE follows), the others are given in
 * their smallest form. Returns a new tuple, Py_None (borrowed: nothing to
 * give, the core was told) or NULL (not even that could be made: Core_poll
 * keeps the event and those after it for its next call, which comes with
 * the next event the core queues). */
static PyObject *fallback_tuple(CoreObject *self, const rc_event *ev) {
  static const char failed[] = "internal error: event not delivered";
  switch (ev->type) {
  case RC_EV_OPEN:
  case RC_EV_REQUEST:
    (void)rc_server_respond(self->srv, ev->conn, 500, NULL, NULL, 0, 0);
    return Py_None;
  case RC_EV_MESSAGE:
  case RC_EV_CONNECTED:
    (void)rc_server_close(self->srv, ev->conn, 1011, failed,
                          sizeof(failed) - 1);
    return Py_None;
  case RC_EV_CLOSE:
    return Py_BuildValue("(i K i s)", (int)ev->type,
                         (unsigned long long)ev->conn, (int)ev->code, "");
  case RC_EV_REDIS:
    return Py_BuildValue("(i K O s)", (int)ev->type,
                         (unsigned long long)ev->conn, Py_None, failed);
  default:
    return Py_BuildValue("(i i s)", (int)ev->type, (int)ev->code, "");
  }
}

PyDoc_STRVAR(poll_doc,
             "poll($self, /)\n--\n\n"
             "Return every queued event, oldest first. One that cannot be "
             "converted (MemoryError) costs only itself: see "
             "stats()['events_undelivered'].");

static PyObject *Core_poll(CoreObject *self, PyObject *unused) {
  (void)unused;
  rc_event *head = rc_server_poll(self->srv);
  if (self->held != NULL) { /* older: they go first */
    rc_event *tail = self->held;
    while (tail->next != NULL)
      tail = tail->next;
    tail->next = head;
    head = self->held;
    self->held = NULL;
  }
  PyObject *list = PyList_New(0);
  if (list == NULL) {
    self->held = head;
    return NULL;
  }
  int answered = 0;
  rc_event *ev = head;
  while (ev != NULL) {
    PyObject *t = event_tuple(ev);
    if (t == NULL) {
      PyErr_Clear();
      t = fallback_tuple(self, ev);
      if (t != NULL)
        self->undelivered++;
      if (t == Py_None) {
        answered = 1;
        Py_INCREF(t);
      }
    }
    if (t == NULL || (t != Py_None && PyList_Append(list, t) < 0)) {
      Py_XDECREF(t);
      break; /* this one and the rest wait for the next poll */
    }
    Py_DECREF(t);
    rc_event *next = ev->next;
    ev->next = NULL;
    rc_events_free(ev);
    ev = next;
  }
  if (answered)
    (void)rc_server_wake(self->srv); /* commands are deferred when batching */
  if (ev != NULL) {
    PyErr_Clear();
    self->held = ev;
  }
  return list;
}

/* --- commands ------------------------------------------------------------ */

/* Joins a sequence of (name, value) pairs into "Name: value\r\n" lines.
 * Returns a new bytes object (maybe empty) or NULL with an exception. */
static PyObject *header_lines(PyObject *headers) {
  PyObject *seq = PySequence_Fast(headers, "headers must be a sequence of "
                                           "(name, value) pairs");
  if (seq == NULL)
    return NULL;
  PyObject *out = PyBytes_FromStringAndSize(NULL, 0);
  Py_ssize_t n = PySequence_Size(seq);
  for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
    PyObject *item = fast_item(seq, i); /* borrowed */
    const char *name, *value;
    Py_ssize_t nl, vl;
    if (!PyArg_ParseTuple(item, "s#s#;headers must be (name, value) pairs",
                          &name, &nl, &value, &vl)) {
      Py_CLEAR(out);
      break;
    }
    int bad = nl == 0;
    for (Py_ssize_t k = 0; k < nl && !bad; k++)
      bad = name[k] <= ' ' || name[k] == ':' || name[k] == 0x7f;
    for (Py_ssize_t k = 0; k < vl && !bad; k++)
      bad = value[k] == '\r' || value[k] == '\n' || value[k] == '\0';
    if (bad) {
      PyErr_Format(PyExc_ValueError, "invalid HTTP header %R", item);
      Py_CLEAR(out);
      break;
    }
    PyObject *line = PyBytes_FromFormat("%s: %s\r\n", name, value);
    if (line == NULL) {
      Py_CLEAR(out);
      break;
    }
    PyBytes_ConcatAndDel(&out, line);
  }
  Py_DECREF(seq);
  return out;
}

static PyObject *Core_accept(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"conn", "subprotocol", "headers", NULL};
  unsigned long long conn;
  const char *sub = NULL;
  Py_ssize_t sublen = 0;
  PyObject *headers = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "K|z#O:accept", kwlist, &conn,
                                   &sub, &sublen, &headers))
    return NULL;
  for (Py_ssize_t k = 0; sub != NULL && k < sublen; k++)
    if (sub[k] <= ' ' || sub[k] == ',' || sub[k] == 0x7f) {
      PyErr_SetString(PyExc_ValueError, "invalid subprotocol token");
      return NULL;
    }
  PyObject *lines = NULL;
  if (headers != NULL && (lines = header_lines(headers)) == NULL)
    return NULL;
  int r = rc_server_accept(self->srv, conn, sub,
                           lines ? PyBytes_AsString(lines) : NULL);
  Py_XDECREF(lines);
  if (command_done(self, r) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *respond_common(CoreObject *self, unsigned long long conn,
                                int status, PyObject *headers,
                                const bytes_view *body, int head_only) {
  if (status < 100 || status > 999) {
    PyErr_SetString(PyExc_ValueError, "status must be a 3-digit HTTP status");
    return NULL;
  }
  PyObject *lines = NULL;
  if (headers != NULL && (lines = header_lines(headers)) == NULL)
    return NULL;
  int r = rc_server_respond(self->srv, conn, status,
                            lines ? PyBytes_AsString(lines) : NULL, body->buf,
                            (size_t)body->len, head_only);
  Py_XDECREF(lines);
  if (command_done(self, r) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *Core_reject(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"conn", "status", "body", "headers", NULL};
  unsigned long long conn;
  int status = 403;
  bytes_view body = {"", 0, NULL};
  PyObject *body_obj = NULL, *headers = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "K|iOO:reject", kwlist, &conn,
                                   &status, &body_obj, &headers))
    return NULL;
  if (body_obj != NULL && bytes_view_get(body_obj, &body) < 0)
    return NULL;
  PyObject *res = respond_common(self, conn, status, headers, &body, 0);
  Py_XDECREF(body.keep);
  return res;
}

static PyObject *Core_respond(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"conn", "status",    "headers",
                           "body", "head_only", NULL};
  unsigned long long conn;
  int status, head_only = 0;
  bytes_view body;
  PyObject *headers, *body_obj;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "KiOO|p:respond", kwlist, &conn,
                                   &status, &headers, &body_obj, &head_only))
    return NULL;
  if (bytes_view_get(body_obj, &body) < 0)
    return NULL;
  PyObject *res = respond_common(self, conn, status, headers, &body, head_only);
  Py_XDECREF(body.keep);
  return res;
}

/* Points at the payload of str (UTF-8, text) or a bytes-like (binary). */
static int payload(PyObject *data, bytes_view *view, const char **p,
                   Py_ssize_t *len, int *is_text) {
  view->keep = NULL;
  if (PyUnicode_Check(data)) {
    *p = PyUnicode_AsUTF8AndSize(data, len); /* cached in data: borrowed */
    *is_text = 1;
    return *p == NULL ? -1 : 0;
  }
  if (bytes_view_get(data, view) < 0) {
    PyObject *name =
        PyErr_ExceptionMatches(PyExc_TypeError)
            ? PyObject_GetAttrString((PyObject *)Py_TYPE(data), "__name__")
            : NULL;
    if (name != NULL) {
      PyErr_Format(PyExc_TypeError,
                   "data must be str or a bytes-like object, not %.100S", name);
      Py_DECREF(name);
    }
    return -1;
  }
  *p = view->buf;
  *len = view->len;
  *is_text = 0;
  return 0;
}

static PyObject *Core_send(CoreObject *self, PyObject *args) {
  unsigned long long conn;
  PyObject *data;
  if (!PyArg_ParseTuple(args, "KO:send", &conn, &data))
    return NULL;
  bytes_view view;
  const char *p;
  Py_ssize_t len;
  int is_text;
  if (payload(data, &view, &p, &len, &is_text) < 0)
    return NULL;
  int r = rc_server_send(self->srv, conn, p, (size_t)len, is_text);
  Py_XDECREF(view.keep);
  if (command_done(self, r) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *Core_publish(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"room", "data", "exclude", NULL};
  unsigned long long room, exclude = 0;
  PyObject *data;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "KO|K:publish", kwlist, &room,
                                   &data, &exclude))
    return NULL;
  bytes_view view;
  const char *p;
  Py_ssize_t len;
  int is_text;
  if (payload(data, &view, &p, &len, &is_text) < 0)
    return NULL;
  int r = rc_server_publish(self->srv, room, p, (size_t)len, is_text, exclude);
  Py_XDECREF(view.keep);
  if (command_done(self, r) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *Core_close(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"conn", "code", "reason", NULL};
  unsigned long long conn;
  int code = 1000;
  const char *reason = "";
  Py_ssize_t rlen = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "K|is#:close", kwlist, &conn,
                                   &code, &reason, &rlen))
    return NULL;
  if (!rc_close_code_valid((unsigned)code)) {
    PyErr_Format(PyExc_ValueError,
                 "invalid close code %d (RFC 6455 7.4: 1000-1003, 1007-1014, "
                 "3000-4999)",
                 code);
    return NULL;
  }
  if (command_done(self, rc_server_close(self->srv, conn, (unsigned)code,
                                         reason, (size_t)rlen)) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* 1 when s is a subprotocol token list item: no separators or spaces. */
static int token_ok(const char *s, Py_ssize_t n) {
  if (n == 0)
    return 0;
  for (Py_ssize_t k = 0; k < n; k++)
    if ((unsigned char)s[k] <= ' ' || (unsigned char)s[k] >= 0x7f ||
        strchr("()<>@,;:\\\"/[]?={}", s[k]) != NULL)
      return 0;
  return 1;
}

PyDoc_STRVAR(connect_doc,
             "connect($self, host, port, target, *, host_header=None, "
             "headers=(), protocols=(), tls=False, verify=True, "
             "cafile=None, server_name=None, handshake_timeout=10.0, "
             "ping_interval=0.0, ping_timeout=0.0, max_message_size=0, "
             "compression='deflate')"
             "\n--\n\n"
             "Start a client connection; return its id. EV_CONNECTED or "
             "EV_CLOSE comes first. compression='deflate' offers "
             "permessage-deflate (RFC 7692), None offers nothing.");

static PyObject *Core_connect(CoreObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"host",
                           "port",
                           "target",
                           "host_header",
                           "headers",
                           "protocols",
                           "tls",
                           "verify",
                           "cafile",
                           "server_name",
                           "handshake_timeout",
                           "ping_interval",
                           "ping_timeout",
                           "max_message_size",
                           "compression",
                           NULL};
  rc_connect_opts o;
  rc_connect_opts_default(&o);
  PyObject *headers = NULL, *protocols = NULL, *lines = NULL, *list = NULL;
  PyObject *result = NULL;
  Py_ssize_t max_msg = 0;
  const char *compression = "deflate";
  if (!PyArg_ParseTupleAndKeywords(
          args, kw, "sis|$zOOppzzdddnz:connect", kwlist, &o.host, &o.port,
          &o.target, &o.host_header, &headers, &protocols, &o.tls,
          &o.tls_verify, &o.tls_cafile, &o.tls_server_name,
          &o.handshake_timeout, &o.ping_interval, &o.ping_timeout, &max_msg,
          &compression))
    return NULL;
  if (compression != NULL && strcmp(compression, "deflate") != 0) {
    PyErr_Format(PyExc_ValueError,
                 "compression must be 'deflate' or None, not '%s'",
                 compression);
    return NULL;
  }
  o.compression = compression != NULL;
  if (o.port < 1 || o.port > 65535 || o.target[0] != '/') {
    PyErr_SetString(PyExc_ValueError,
                    "port must be in 1..65535, target must start with '/'");
    return NULL;
  }
  if (check_secs("handshake_timeout", o.handshake_timeout) < 0 ||
      check_secs("ping_interval", o.ping_interval) < 0 ||
      check_secs("ping_timeout", o.ping_timeout) < 0 ||
      check_size("max_message_size", max_msg, 0, PY_SSIZE_T_MAX) < 0)
    return NULL;
  if (o.tls_server_name != NULL && o.tls_server_name[0] == '\0') {
    /* it would leave the certificate's name unchecked */
    PyErr_SetString(PyExc_ValueError, "server_name must not be empty");
    return NULL;
  }
  o.max_message_size = (size_t)max_msg;
  if (headers != NULL && (lines = header_lines(headers)) == NULL)
    goto error;
  o.extra_headers = lines ? PyBytes_AsString(lines) : NULL;
  if (protocols != NULL && protocols != Py_None) {
    PyObject *sep = PyUnicode_FromString(", ");
    if (sep == NULL)
      goto error;
    list = PyUnicode_Join(sep, protocols);
    Py_DECREF(sep);
    if (list == NULL)
      goto error;
    Py_ssize_t n = PySequence_Length(protocols);
    for (Py_ssize_t i = 0; i < n; i++) {
      PyObject *item = PySequence_GetItem(protocols, i);
      Py_ssize_t il;
      const char *is = item ? PyUnicode_AsUTF8AndSize(item, &il) : NULL;
      int ok = is != NULL && token_ok(is, il);
      if (item != NULL && !ok && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "invalid subprotocol %R", item);
      Py_XDECREF(item);
      if (!ok)
        goto error;
    }
    if (n > 0 && (o.protocols = PyUnicode_AsUTF8AndSize(list, NULL)) == NULL)
      goto error;
  }
  uint64_t conn = 0;
  int r = rc_server_connect(self->srv, &o, &conn);
  if (r == -EINVAL && self->started) {
    PyErr_SetString(PyExc_ValueError,
                    "invalid host, target or header (control characters, "
                    "or a host longer than 255 bytes)");
    goto error;
  }
  if (command_done(self, r) < 0)
    goto error;
  result = PyLong_FromUnsignedLongLong(conn);
error:
  Py_XDECREF(lines);
  Py_XDECREF(list);
  return result;
}

PyDoc_STRVAR(
    adopt_doc,
    "adopt($self, fd, head, /)\n--\n\n"
    "Serve a connection accepted elsewhere; return its id. fd is its socket "
    "(a dup), head the bytes already read from it (the request head, and "
    "any frames behind it). From the call on the core owns fd, whatever "
    "happens, and closes it (at once when it cannot serve it). EV_OPEN "
    "comes first, or EV_CLOSE (1006, with the reason) when the core "
    "answers the request itself. OSError on error.");

static PyObject *Core_adopt(CoreObject *self, PyObject *args) {
  int fd;
  PyObject *head;
  if (!PyArg_ParseTuple(args, "iO:adopt", &fd, &head))
    return NULL;
  bytes_view view;
  if (bytes_view_get(head, &view) < 0) {
    if (fd >= 0)
      (void)close(fd); /* the core's from the call on, even now */
    return NULL;
  }
  uint64_t conn = 0;
  int r = rc_server_adopt(self->srv, fd, view.buf, (size_t)view.len, &conn);
  Py_XDECREF(view.keep);
  if (r != 0) {
    PyObject *exc = Py_BuildValue("(is)", -r, rc_strerror(r));
    if (exc != NULL) {
      PyErr_SetObject(PyExc_OSError, exc);
      Py_DECREF(exc);
    }
    return NULL;
  }
  if (command_done(self, 0) < 0)
    return NULL;
  return PyLong_FromUnsignedLongLong(conn);
}

static PyObject *Core_buffered(CoreObject *self, PyObject *arg) {
  unsigned long long conn = PyLong_AsUnsignedLongLong(arg);
  if (conn == (unsigned long long)-1 && PyErr_Occurred())
    return NULL;
  size_t n = 0;
  if (rc_server_buffered(self->srv, conn, &n) != 0)
    n = 0; /* gone: nothing is waiting any more */
  return PyLong_FromSize_t(n);
}

/* Calls fn with the one id (connection or room) given as argument. */
static PyObject *id_call(CoreObject *self, PyObject *arg,
                         int (*fn)(rc_server *, uint64_t)) {
  unsigned long long conn = PyLong_AsUnsignedLongLong(arg);
  if (conn == (unsigned long long)-1 && PyErr_Occurred())
    return NULL;
  if (command_done(self, fn(self->srv, conn)) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *Core_pause_reading(CoreObject *self, PyObject *arg) {
  return id_call(self, arg, rc_server_pause_reading);
}

static PyObject *Core_resume_reading(CoreObject *self, PyObject *arg) {
  return id_call(self, arg, rc_server_resume_reading);
}

static PyObject *Core_room_new(CoreObject *self, PyObject *args) {
  int relay = RC_RELAY_NONE;
  if (!PyArg_ParseTuple(args, "|i:room_new", &relay))
    return NULL;
  uint64_t room = rc_server_room_new_relay(self->srv, relay);
  if (room == 0) {
    PyErr_Format(PyExc_ValueError, "relay must be 0, 1 or 2, not %d", relay);
    return NULL;
  }
  return PyLong_FromUnsignedLongLong(room);
}

typedef int (*room_fn)(rc_server *, uint64_t, uint64_t);

static PyObject *room_call(CoreObject *self, PyObject *args, const char *fmt,
                           room_fn fn) {
  unsigned long long conn, room;
  if (!PyArg_ParseTuple(args, fmt, &conn, &room))
    return NULL;
  if (command_done(self, fn(self->srv, conn, room)) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *Core_join(CoreObject *self, PyObject *args) {
  unsigned long long conn, room;
  int relay = RC_RELAY_NONE;
  if (!PyArg_ParseTuple(args, "KK|i:join", &conn, &room, &relay))
    return NULL;
  if (relay < RC_RELAY_NONE || relay > RC_RELAY_OTHERS) {
    PyErr_SetString(PyExc_ValueError, "relay must be 0, 1 or 2");
    return NULL;
  }
  int r = rc_server_join(self->srv, conn, room, relay);
  if (r == -EINVAL && self->started) {
    PyErr_Format(PyExc_ValueError,
                 "room %llu was not made with relay %d: a room's mode is "
                 "fixed by room_new(relay)",
                 room, relay);
    return NULL;
  }
  if (command_done(self, r) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* broadcast(rooms, data, exclude=0): rooms is a sequence of room ids. */
static PyObject *Core_broadcast(CoreObject *self, PyObject *args,
                                PyObject *kw) {
  static char *kwlist[] = {"rooms", "data", "exclude", NULL};
  unsigned long long exclude = 0;
  PyObject *rooms_obj, *data;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|K:broadcast", kwlist,
                                   &rooms_obj, &data, &exclude))
    return NULL;
  PyObject *seq = PySequence_Fast(rooms_obj, "rooms must be a sequence");
  if (seq == NULL)
    return NULL;
  Py_ssize_t n = PySequence_Size(seq);
  uint64_t *ids = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(*ids));
  if (ids == NULL) {
    Py_DECREF(seq);
    return PyErr_NoMemory();
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    ids[i] = PyLong_AsUnsignedLongLong(fast_item(seq, i));
    if (PyErr_Occurred()) {
      PyMem_Free(ids);
      Py_DECREF(seq);
      return NULL;
    }
  }
  Py_DECREF(seq);
  bytes_view view;
  const char *p;
  Py_ssize_t len;
  int is_text;
  if (payload(data, &view, &p, &len, &is_text) < 0) {
    PyMem_Free(ids);
    return NULL;
  }
  int r = rc_server_broadcast(self->srv, ids, (size_t)n, p, (size_t)len,
                              is_text, exclude);
  PyMem_Free(ids);
  Py_XDECREF(view.keep);
  if (command_done(self, r) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *Core_leave(CoreObject *self, PyObject *args) {
  return room_call(self, args, "KK:leave", rc_server_leave);
}

static PyObject *Core_room_free(CoreObject *self, PyObject *arg) {
  return id_call(self, arg, rc_server_room_free);
}

static PyObject *Core_stats(CoreObject *self, PyObject *unused) {
  (void)unused;
  rc_stats st;
  rc_server_stats(self->srv, &st);
  const struct {
    const char *name;
    uint64_t value;
  } fields[] = {
      {"connections", st.connections},
      {"accepted_total", st.accepted_total},
      {"rooms_created", st.rooms},
      {"messages_in", st.messages_in},
      {"deliveries", st.deliveries},
      {"slow_consumer_closes", st.slow_consumer_closes},
      {"parsers", st.parsers},
      {"writes", st.writes},
      {"wakeups", st.wakeups},
      {"messages_dropped", st.messages_dropped},
      {"connections_refused", st.connections_refused},
      {"idle_closes", st.idle_closes},
      {"fragment_closes", st.fragment_closes},
      {"event_bytes", st.event_bytes},
      {"reads_held", st.reads_held},
      {"clients", st.clients},
      {"client_connects", st.client_connects},
      {"backplane_up", st.backplane_up},
      {"backplane_published", st.backplane_published},
      {"backplane_received", st.backplane_received},
      {"backplane_reconnects", st.backplane_reconnects},
      {"backplane_buffered", st.backplane_buffered},
      {"backplane_dropped", st.backplane_dropped},
      {"backplane_channels", st.backplane_channels},
      {"backplane_invalid", st.backplane_invalid},
      {"backplane_coalesced", st.backplane_coalesced},
      {"adopted_total", st.adopted_total},
      {"deflate_connections", st.deflate_connections},
      {"messages_deflated", st.messages_deflated},
      {"messages_inflated", st.messages_inflated},
      {"tls_connections", st.tls_connections},
      {"tls_handshakes", st.tls_handshakes},
      {"tls_handshake_failures", st.tls_handshake_failures},
      {"bytes_out", st.bytes_out},
      {"rooms_open", st.rooms_open},
      {"refused_bad_request", st.refused_bad_request},
      {"refused_method", st.refused_method},
      {"refused_version", st.refused_version},
      {"refused_not_websocket", st.refused_not_websocket},
      {"refused_too_large", st.refused_too_large},
      {"refused_shutting_down", st.refused_shutting_down},
      {"refused_timeout", st.refused_timeout},
  };
  PyObject *dict = PyDict_New();
  for (size_t i = 0; dict != NULL && i < sizeof(fields) / sizeof(fields[0]);
       i++) {
    PyObject *v = PyLong_FromUnsignedLongLong(fields[i].value);
    if (v == NULL || PyDict_SetItemString(dict, fields[i].name, v) < 0)
      Py_CLEAR(dict);
    Py_XDECREF(v);
  }
  PyObject *v =
      dict == NULL ? NULL : PyLong_FromUnsignedLongLong(self->undelivered);
  if (v == NULL || PyDict_SetItemString(dict, "events_undelivered", v) < 0)
    Py_CLEAR(dict);
  Py_XDECREF(v);
  return dict;
}

/* --- the backplane ------------------------------------------------------- */

static PyObject *Core_server_id(CoreObject *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromUnsignedLongLong(rc_server_id(self->srv));
}

static PyObject *Core_room_name(CoreObject *self, PyObject *args) {
  unsigned long long room;
  const char *name;
  Py_ssize_t len;
  if (!PyArg_ParseTuple(args, "Ks#:room_name", &room, &name, &len))
    return NULL;
  int r = rc_server_room_name(self->srv, room, name, (size_t)len);
  if (r == -EINVAL && self->started) {
    PyErr_Format(PyExc_ValueError,
                 "a room name is 1 to %d bytes of UTF-8 without NUL",
                 RC_ROOM_NAME_MAX);
    return NULL;
  }
  if (command_done(self, r) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *Core_recover_begin(CoreObject *self, PyObject *args) {
  return room_call(self, args, "KK:recover_begin", rc_server_recover_begin);
}

static PyObject *Core_recover_cancel(CoreObject *self, PyObject *args) {
  return room_call(self, args, "KK:recover_cancel", rc_server_recover_cancel);
}

/* recover_end(conn, room, first, msgs, after, last): first and after are
 * str or None; msgs a list of bytes (version-2 envelopes). */
static PyObject *Core_recover_end(CoreObject *self, PyObject *args) {
  unsigned long long conn, room, last;
  PyObject *first, *msgs, *after;
  if (!PyArg_ParseTuple(args, "KKOO!OK:recover_end", &conn, &room, &first,
                        &PyList_Type, &msgs, &after, &last))
    return NULL;
  const char *fp = NULL, *ap = NULL;
  Py_ssize_t fl = 0, al = 0;
  if (first != Py_None && (fp = PyUnicode_AsUTF8AndSize(first, &fl)) == NULL)
    return NULL;
  if (after != Py_None && (ap = PyUnicode_AsUTF8AndSize(after, &al)) == NULL)
    return NULL;
  Py_ssize_t n = PyList_Size(msgs);
  const void **ptrs = PyMem_Calloc((size_t)n + 1, sizeof(*ptrs));
  size_t *lens = PyMem_Calloc((size_t)n + 1, sizeof(*lens));
  PyObject *result = NULL;
  if (ptrs == NULL || lens == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    char *p;
    Py_ssize_t len;
    /* borrowed: msgs holds them for the call */
    if (PyBytes_AsStringAndSize(PyList_GetItem(msgs, i), &p, &len) < 0)
      goto done;
    ptrs[i] = p;
    lens[i] = (size_t)len;
  }
  int r = rc_server_recover_end(self->srv, conn, room, fp, (size_t)fl, ptrs,
                                lens, (size_t)n, ap, (size_t)al, last);
  if (r == -EINVAL && self->started) {
    PyErr_SetString(PyExc_ValueError,
                    "recover_end: a message is not a history message "
                    "within max_message_size");
    goto done;
  }
  if (command_done(self, r) < 0)
    goto done;
  result = Py_None;
  Py_INCREF(result);
done:
  PyMem_Free(ptrs);
  PyMem_Free(lens);
  return result;
}

/* redis(token, *args): args are str (UTF-8), bytes-like or int. */
static PyObject *Core_redis(CoreObject *self, PyObject *args) {
  Py_ssize_t argc = PyTuple_Size(args) - 1;
  if (argc < 1) {
    PyErr_SetString(PyExc_TypeError, "redis() takes a token and a command");
    return NULL;
  }
  if (!self->backplane) {
    PyErr_SetString(PyExc_RuntimeError, "this server has no backplane");
    return NULL;
  }
  unsigned long long token =
      PyLong_AsUnsignedLongLong(PyTuple_GetItem(args, 0)); /* borrowed */
  if (token == (unsigned long long)-1 && PyErr_Occurred())
    return NULL;
  PyObject *result = NULL;
  const char **argv = PyMem_Calloc((size_t)argc, sizeof(*argv));
  size_t *lens = PyMem_Calloc((size_t)argc, sizeof(*lens));
  PyObject *keep = PyList_New(0); /* owns the bytes argv points into */
  if (argv == NULL || lens == NULL || keep == NULL) {
    PyErr_NoMemory();
    goto error;
  }
  for (Py_ssize_t i = 0; i < argc; i++) {
    PyObject *arg = PyTuple_GetItem(args, i + 1); /* borrowed */
    PyObject *b;
    if (PyUnicode_Check(arg))
      b = PyUnicode_AsUTF8String(arg);
    else if (PyLong_Check(arg)) {
      PyObject *t = PyObject_Str(arg);
      b = t != NULL ? PyUnicode_AsUTF8String(t) : NULL;
      Py_XDECREF(t);
    } else
      b = PyBytes_FromObject(arg);
    if (b == NULL || PyList_Append(keep, b) < 0) {
      Py_XDECREF(b);
      goto error;
    }
    Py_DECREF(b);
    argv[i] = PyBytes_AsString(b); /* alive in keep */
    lens[i] = (size_t)PyBytes_Size(b);
  }
  int r = rc_server_redis(self->srv, token, (int)argc, argv, lens);
  if (r == -EINVAL && self->started) {
    PyErr_Format(PyExc_ValueError,
                 "%.40s is not allowed on the backplane's shared connection",
                 argv[0]);
    goto error;
  }
  if (command_done(self, r) < 0)
    goto error;
  result = Py_None;
  Py_INCREF(result);
error:
  PyMem_Free(argv);
  PyMem_Free(lens);
  Py_XDECREF(keep);
  return result;
}

static PyMethodDef Core_methods[] = {
    {"listen", (PyCFunction)Core_listen, METH_VARARGS, listen_doc},
    {"stop", (PyCFunction)Core_stop, METH_VARARGS, stop_doc},
    {"set_tls", (PyCFunction)Core_set_tls, METH_VARARGS, set_tls_doc},
    {"check_backplane_tls", (PyCFunction)Core_check_backplane_tls,
     METH_VARARGS | METH_STATIC, check_backplane_tls_doc},
    {"check_tls", (PyCFunction)Core_check_tls, METH_VARARGS | METH_STATIC,
     check_tls_doc},
    {"start", (PyCFunction)Core_start, METH_NOARGS, start_doc},
    {"connect", (PyCFunction)(void (*)(void))Core_connect,
     METH_VARARGS | METH_KEYWORDS, connect_doc},
    {"adopt", (PyCFunction)Core_adopt, METH_VARARGS, adopt_doc},
    {"buffered", (PyCFunction)Core_buffered, METH_O,
     "buffered($self, conn, /)\n--\n\nBytes of a client connection not "
     "yet written to its socket (0 once gone)."},
    {"set_batching", (PyCFunction)Core_set_batching, METH_O, set_batching_doc},
    {"idle", (PyCFunction)Core_idle, METH_NOARGS,
     "idle($self, /)\n--\n\nSay that the events polled have been handled "
     "(see rc_server_idle)."},
    {"flush", (PyCFunction)Core_flush, METH_NOARGS,
     "flush($self, /)\n--\n\nWake the core for the commands of this batch."},
    {"fileno", (PyCFunction)Core_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\nReadable while events are queued."},
    {"poll", (PyCFunction)Core_poll, METH_NOARGS, poll_doc},
    {"accept", (PyCFunction)(void (*)(void))Core_accept,
     METH_VARARGS | METH_KEYWORDS,
     "accept($self, conn, subprotocol=None, headers=())\n--\n\n"
     "Answer an open request with 101 Switching Protocols."},
    {"reject", (PyCFunction)(void (*)(void))Core_reject,
     METH_VARARGS | METH_KEYWORDS,
     "reject($self, conn, status=403, body=b'', headers=())\n--\n\n"
     "Answer an open request with an HTTP error and close."},
    {"respond", (PyCFunction)(void (*)(void))Core_respond,
     METH_VARARGS | METH_KEYWORDS,
     "respond($self, conn, status, headers, body, head_only=False)\n--\n\n"
     "Answer a plain HTTP request and close."},
    {"send", (PyCFunction)Core_send, METH_VARARGS,
     "send($self, conn, data, /)\n--\n\nQueue one frame (str: text)."},
    {"close", (PyCFunction)(void (*)(void))Core_close,
     METH_VARARGS | METH_KEYWORDS,
     "close($self, conn, code=1000, reason='')\n--\n\n"
     "Start the close handshake (HTTP 403 before accept)."},
    {"pause_reading", (PyCFunction)Core_pause_reading, METH_O,
     "pause_reading($self, conn, /)\n--\n\nStop reading from conn "
     "(backpressure)."},
    {"resume_reading", (PyCFunction)Core_resume_reading, METH_O,
     "resume_reading($self, conn, /)\n--\n\nRead from conn again."},
    {"room_new", (PyCFunction)Core_room_new, METH_VARARGS,
     "room_new($self, relay=0, /)\n--\n\nA new room id; its relay mode is "
     "fixed here."},
    {"room_free", (PyCFunction)Core_room_free, METH_O,
     "room_free($self, room, /)\n--\n\nEmpty and forget a room."},
    {"join", (PyCFunction)Core_join, METH_VARARGS,
     "join($self, conn, room, relay=0, /)\n--\n\nAdd conn to room (relay: "
     "0 none, 1 all, 2 others)."},
    {"broadcast", (PyCFunction)(void (*)(void))Core_broadcast,
     METH_VARARGS | METH_KEYWORDS,
     "broadcast($self, rooms, data, exclude=0)\n--\n\n"
     "Frame data once and queue it once on every member of any of rooms."},
    {"leave", (PyCFunction)Core_leave, METH_VARARGS,
     "leave($self, conn, room, /)\n--\n\nRemove conn from room."},
    {"publish", (PyCFunction)(void (*)(void))Core_publish,
     METH_VARARGS | METH_KEYWORDS,
     "publish($self, room, data, exclude=0)\n--\n\n"
     "Frame data once and queue it on every member but exclude."},
    {"stats", (PyCFunction)Core_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nCounters of the core."},
    {"server_id", (PyCFunction)Core_server_id, METH_NOARGS,
     "server_id($self, /)\n--\n\nThis server's random 64-bit id."},
    {"room_name", (PyCFunction)Core_room_name, METH_VARARGS,
     "room_name($self, room, name, /)\n--\n\nName room: with a backplane, "
     "rooms of that name on every server are one."},
    {"redis", (PyCFunction)Core_redis, METH_VARARGS,
     "redis($self, token, *args)\n--\n\nSend a command on the backplane's "
     "command connection; the reply comes as an EV_REDIS event."},
    {"recover_begin", (PyCFunction)Core_recover_begin, METH_VARARGS,
     "recover_begin($self, conn, room, /)\n--\n\nKeep room's messages for "
     "conn from the moment its channel is subscribed; an EV_RECOVER event "
     "(conn, code, room) says when (code 1) or that it cannot (0)."},
    {"recover_end", (PyCFunction)Core_recover_end, METH_VARARGS,
     "recover_end($self, conn, room, first, msgs, after, last, /)\n--\n\n"
     "Send conn first, the history messages msgs, after and the kept "
     "messages past offset last, then join it to room."},
    {"recover_cancel", (PyCFunction)Core_recover_cancel, METH_VARARGS,
     "recover_cancel($self, conn, room, /)\n--\n\nEnd a recover_begin "
     "without joining."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Core_doc, "Core(*, max_message_size=1048576, "
                       "max_queue_bytes=1048576, ping_interval=20.0, "
                       "ping_timeout=20.0, handshake_timeout=10.0, "
                       "close_timeout=5.0, max_header_bytes=8192, "
                       "max_headers=100, http_requests=False, "
                       "max_connections=0, idle_timeout=0.0, "
                       "drop_oldest=False, max_event_bytes=67108864, "
                       "backplane_host=None, backplane_port=6379, "
                       "backplane_db=0, backplane_username=None, "
                       "backplane_password=None, backplane_prefix=None, "
                       "backplane_buffer=1048576, compression=True, "
                       "compression_threshold=128)\n--\n\n"
                       "The C core: a libuv loop on its own thread.");

static PyType_Slot Core_slots[] = {
    {Py_tp_new, Core_new},
    {Py_tp_dealloc, Core_dealloc},
    {Py_tp_methods, Core_methods},
    {Py_tp_doc, (void *)Core_doc},
    {0, NULL},
};

static PyType_Spec Core_spec = {
    .name = "roomcast._core.Core",
    .basicsize = sizeof(CoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Core_slots,
};

/* --- module -------------------------------------------------------------- */

/* Module functions: pure C over their arguments, no Core needed. */

PyDoc_STRVAR(key_slot_doc,
             "key_slot(key, /)\n--\n\n"
             "The Redis Cluster slot of key (bytes), 0 to 16383: CRC16 of its "
             "hash tag\nor of the whole key, as CLUSTER KEYSLOT computes it.");

static PyObject *mod_key_slot(PyObject *m, PyObject *key) {
  (void)m;
  char *p;
  Py_ssize_t len;
  if (!PyBytes_Check(key)) {
    PyErr_SetString(PyExc_TypeError, "key_slot() takes bytes");
    return NULL;
  }
  if (PyBytes_AsStringAndSize(key, &p, &len) < 0)
    return NULL;
  return PyLong_FromLong(rc_slot_of(p, (size_t)len));
}

PyDoc_STRVAR(room_tag_doc,
             "room_tag(channel, /)\n--\n\n"
             "The hash tag (6 bytes, '{' 4 letters '}') of the room whose "
             "channel is\nchannel (bytes) on a Redis Cluster: every Redis name "
             "of the room starts\nwith it, so all are on one slot.");

static PyObject *mod_room_tag(PyObject *m, PyObject *channel) {
  (void)m;
  char *p;
  Py_ssize_t len;
  if (!PyBytes_Check(channel)) {
    PyErr_SetString(PyExc_TypeError, "room_tag() takes bytes");
    return NULL;
  }
  if (PyBytes_AsStringAndSize(channel, &p, &len) < 0)
    return NULL;
  char tag[RC_SLOT_TAG_LEN];
  (void)rc_slot_tag(p, (size_t)len, tag);
  return PyBytes_FromStringAndSize(tag, RC_SLOT_TAG_LEN);
}

static PyMethodDef module_methods[] = {
    {"key_slot", (PyCFunction)mod_key_slot, METH_O, key_slot_doc},
    {"room_tag", (PyCFunction)mod_room_tag, METH_O, room_tag_doc},
    {NULL, NULL, 0, NULL},
};

/* The core's other numbers that Python code needs, so that no Python file
 * keeps a copy that could drift: the relay modes (enum rc_relay), the
 * bound of a room name (RC_ROOM_NAME_MAX: the Python layer keeps 32 of
 * its bytes for its own namespaces) and the codes of an RC_EV_BACKPLANE
 * event (enum rc_backplane_state). */
static int add_core_constants(PyObject *m) {
  if (PyModule_AddIntConstant(m, "RELAY_NONE", RC_RELAY_NONE) < 0 ||
      PyModule_AddIntConstant(m, "RELAY_ALL", RC_RELAY_ALL) < 0 ||
      PyModule_AddIntConstant(m, "RELAY_OTHERS", RC_RELAY_OTHERS) < 0 ||
      PyModule_AddIntConstant(m, "ROOM_NAME_MAX", RC_ROOM_NAME_MAX) < 0 ||
      PyModule_AddIntConstant(m, "BACKPLANE_DOWN", RC_BACKPLANE_DOWN) < 0 ||
      PyModule_AddIntConstant(m, "BACKPLANE_UP", RC_BACKPLANE_UP) < 0 ||
      PyModule_AddIntConstant(m, "BACKPLANE_RETRY", RC_BACKPLANE_RETRY) < 0)
    return -1;
  return 0;
}

static int module_exec(PyObject *m) {
  module_state *st = PyModule_GetState(m);
  st->core_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Core_spec, NULL);
  if (st->core_type == NULL)
    return -1;
  if (PyModule_AddType(m, st->core_type) < 0)
    return -1;
  if (PyModule_AddIntConstant(m, "EV_OPEN", RC_EV_OPEN) < 0 ||
      PyModule_AddIntConstant(m, "EV_MESSAGE", RC_EV_MESSAGE) < 0 ||
      PyModule_AddIntConstant(m, "EV_CLOSE", RC_EV_CLOSE) < 0 ||
      PyModule_AddIntConstant(m, "EV_REQUEST", RC_EV_REQUEST) < 0 ||
      PyModule_AddIntConstant(m, "EV_CONNECTED", RC_EV_CONNECTED) < 0 ||
      PyModule_AddIntConstant(m, "EV_REDIS", RC_EV_REDIS) < 0 ||
      PyModule_AddIntConstant(m, "EV_BACKPLANE", RC_EV_BACKPLANE) < 0 ||
      PyModule_AddIntConstant(m, "EV_RECOVER", RC_EV_RECOVER) < 0)
    return -1;
  return add_core_constants(m);
}

static int module_traverse(PyObject *m, visitproc visit, void *arg) {
  module_state *st = PyModule_GetState(m);
  Py_VISIT(st->core_type);
  return 0;
}

static int module_clear(PyObject *m) {
  module_state *st = PyModule_GetState(m);
  Py_CLEAR(st->core_type);
  return 0;
}

static void module_free(void *m) { (void)module_clear((PyObject *)m); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "roomcast._core",
    .m_doc = "The C core of roomcast: WebSocket server, rooms and fan-out.",
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
