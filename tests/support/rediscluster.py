"""A real Redis Cluster for the tests: ``masters`` masters (default 3) with
``replicas`` replicas each (default 1), every node a ``redis-server
--cluster-enabled yes`` on free loopback ports, in a directory of its own
under the one given, never the system service.

``start()`` starts the nodes, joins them with ``redis-cli --cluster create``
and returns once every node reports ``cluster_state:ok``, every node has
the same view of who owns each slot and every replica is in sync with its
master (so that a failover finds a replica ready). The node timeout is one
second (``--cluster-node-timeout 1000``), so that a stopped master is
replaced within a few seconds; replicas may always take over
(``--cluster-replica-validity-factor 0``: on a loaded machine a replica's
last contact can look old).

What the tests ask: ``nodes()`` (each node's id, address, role and slot
ranges, from ``CLUSTER NODES``), ``master_of(slot)``, ``client_for(slot)``
(a ``RespClient`` on the master owning a slot), ``kill_master(slot)`` and
``wait_promoted(slot)`` (a failover), ``migrate_slot(slot, to)`` (a slot
moved with its keys, the way ``redis-cli --cluster reshard`` moves one), and
``log()`` for a failure's message. Every wait polls for at most ``T``
seconds (a loaded 2-core machine).
"""

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from support.redisproc import RespClient, RespError, T, free_port

SLOTS = 16384


@dataclass
class Node:
    """One node as ``CLUSTER NODES`` describes it. ``role`` is "master" or
    "replica"; ``master_id`` is a replica's master (None for a master);
    ``slots`` the inclusive ranges a master owns; ``failed`` when the
    cluster marks it ``fail`` (or the asking node cannot reach it:
    ``fail?``)."""

    id: str
    host: str
    port: int
    role: str
    master_id: str | None
    slots: list[tuple[int, int]] = field(default_factory=list)
    failed: bool = False

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def owns(self, slot):
        return any(a <= slot <= b for a, b in self.slots)


def parse_nodes(text):
    """The nodes of a ``CLUSTER NODES`` reply (bytes or str), as ``Node``.
    Slots being imported or migrated (``[slot->-id]``) are not owned."""
    if isinstance(text, bytes):
        text = text.decode()
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        node_id, addr, flags, master = parts[0], parts[1], parts[2].split(","), parts[3]
        hostport = addr.split("@", 1)[0].split(",", 1)[0]
        host, _, port = hostport.rpartition(":")
        slots = []
        for spec in parts[8:]:
            if spec.startswith("["):
                continue
            a, _, b = spec.partition("-")
            slots.append((int(a), int(b or a)))
        nodes.append(
            Node(
                id=node_id,
                host=host,
                port=int(port),
                role="master" if "master" in flags else "replica",
                master_id=None if master == "-" else master,
                slots=sorted(slots),
                failed="fail" in flags or "fail?" in flags,
            )
        )
    return nodes


def _fields(text):
    """The ``name:value`` lines of an INFO or CLUSTER INFO reply."""
    fields = {}
    for line in text.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def _command(port, *args):
    client = RespClient(port)
    try:
        return client.command(*args)
    finally:
        client.close()


class RedisCluster:
    def __init__(self, directory, masters=3, replicas=1):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        for path in (self.binary, self.cli):
            if not os.path.exists(path):
                raise RuntimeError(f"{path} is not installed: run `make deps` (Debian package redis-server)")
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.dir = str(directory)
        self.masters = masters
        self.replicas = replicas
        self.procs = {}  # port: Popen, for the nodes this object runs
        self.buses = {}  # port: its cluster bus port, kept for restart()
        self.create_output = ""

    # --- life -----------------------------------------------------------------

    def start(self):
        """Starts the nodes, creates the cluster and waits until it is ok
        everywhere (see the module's docstring); returns self."""
        used = set()
        for _ in range(self.masters * (1 + self.replicas)):
            port, self.buses[port] = self._two_ports(used)
            self._start_node(port)
        for port in self.procs:
            self._wait_answers(port)
        addrs = [f"127.0.0.1:{port}" for port in self.procs]
        create = subprocess.run(
            [self.cli, "--cluster", "create", *addrs, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=T * 2,
        )
        self.create_output = create.stdout + create.stderr
        if create.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed:\n" + self.log())
        self.wait_ok()
        return self

    def stop(self):
        """Stops every node still running (SIGTERM, then SIGKILL after T)."""
        for port in list(self.procs):
            self._stop_node(port)

    def _two_ports(self, used):
        # The client port and the cluster bus port (--cluster-port), both
        # free and distinct from the other nodes' (free_port may hand out
        # a port again once its probe socket is closed).
        ports = []
        while len(ports) < 2:
            port = free_port()
            if port not in used:
                used.add(port)
                ports.append(port)
        return ports

    def _node_dir(self, port):
        return os.path.join(self.dir, f"node-{port}")

    def _start_node(self, port):
        directory = self._node_dir(port)
        os.makedirs(directory, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                os.path.join(directory, "nodes.conf"),
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                str(self.buses[port]),
                "--cluster-replica-validity-factor",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
                "--daemonize",
                "no",
                "--logfile",
                os.path.join(directory, "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_answers(self, port):
        deadline = time.monotonic() + T
        while True:
            try:
                if _command(port, "PING") == "PONG":
                    return
            except (OSError, RespError):
                pass
            if self.procs[port].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start; the logs:\n" + self.log())
            time.sleep(0.05)

    def _stop_node(self, port):
        proc = self.procs.pop(port)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(T)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self):
        """What ``redis-cli --cluster create`` said, then every node's log."""
        parts = ["--- redis-cli --cluster create\n" + self.create_output]
        for entry in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, entry, "redis.log")
            try:
                with open(path) as f:
                    parts.append(f"--- {entry}\n" + f.read())
            except OSError:
                pass
        return "\n".join(parts)

    # --- the cluster's view ---------------------------------------------------

    @property
    def ports(self):
        """The client ports of the nodes running now."""
        return [port for port, proc in self.procs.items() if proc.poll() is None]

    def nodes(self, port=None):
        """Every node of the cluster as the node on ``port`` (default: the
        first one running) sees it, stopped ones included (``failed``)."""
        return parse_nodes(_command(port or self.ports[0], "CLUSTER", "NODES"))

    def node(self, node_id):
        for node in self.nodes():
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def master_of(self, slot):
        """The master (``Node``) owning slot, as the first running node sees it."""
        for node in self.nodes():
            if node.role == "master" and not node.failed and node.owns(slot):
                return node
        raise LookupError(f"no master owns slot {slot}")

    def client_for(self, slot):
        """A new ``RespClient`` on the master owning slot (the caller closes it)."""
        return RespClient(self.master_of(slot).port)

    def _views(self):
        """Each running node's (cluster_state, owner of every slot) or None
        for a node that did not answer."""
        views = {}
        for port in self.ports:
            try:
                client = RespClient(port)
                try:
                    state = _fields(client.command("CLUSTER", "INFO")).get("cluster_state")
                    owners = {}
                    for node in parse_nodes(client.command("CLUSTER", "NODES")):
                        if node.role == "master" and not node.failed:
                            for a, b in node.slots:
                                owners[(a, b)] = node.id
                    views[port] = (state, owners)
                finally:
                    client.close()
            except (OSError, RespError):
                views[port] = None
        return views

    def _settled(self):
        """'' when every running node says ok, they agree on the owners and
        the owners cover every slot, and every replica's link to its master
        is up; else what is still missing."""
        views = self._views()
        first = None
        for port, view in views.items():
            if view is None:
                return f"node {port} does not answer"
            state, owners = view
            if state != "ok":
                return f"node {port}: cluster_state:{state}"
            if first is None:
                first = owners
            elif owners != first:
                return f"node {port} sees other owners"
        if sum(b - a + 1 for a, b in first) != SLOTS:
            return "some slots have no owner"
        for port in self.ports:
            info = _fields(_command(port, "INFO", "replication"))
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return f"replica {port}: its link to its master is down"
        return ""

    def wait_ok(self, timeout=T):
        """Until the cluster has settled (see ``_settled``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                why = self._settled()
            except (OSError, RespError) as e:
                why = repr(e)
            if not why:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster did not settle in {timeout} s ({why}); the logs:\n" + self.log())
            time.sleep(0.1)

    # --- what happens to a cluster --------------------------------------------

    def kill_master(self, slot):
        """Stops the master owning slot (SIGTERM: it shuts down cleanly, its
        replica in sync, and the replica is promoted once the other masters
        mark it failed, a second or two later); returns its ``Node`` as it
        was."""
        node = self.master_of(slot)
        self._stop_node(node.port)
        return node

    def wait_promoted(self, slot, timeout=T):
        """Until a node that was a replica owns slot, every running node
        agrees, the cluster is ok again; returns the new master's ``Node``.
        (The promoted master has no replica: its old master is stopped.)"""
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            try:
                node = self.master_of(slot)
                if node.port not in self.ports:
                    why = f"slot {slot} is still on the stopped {node.address}"
                else:
                    why = self._settled_without_replicas()
                    if not why:
                        return node
            except (OSError, RespError, LookupError) as e:
                why = repr(e)
            time.sleep(0.1)
        raise AssertionError(f"no replica took slot {slot} over in {timeout} s ({why}); the logs:\n" + self.log())

    def restart(self, node):
        """Starts a stopped node (a ``Node``) again on its ports with its
        cluster configuration, and waits until the cluster has settled: a
        master whose slots went to its replica meanwhile comes back as that
        replica's replica."""
        if node.port in self.ports:
            raise ValueError(f"{node.address} is running")
        self._start_node(node.port)
        self._wait_answers(node.port)
        self.wait_ok()

    def _settled_without_replicas(self):
        why = self._settled()
        return "" if why.startswith("replica ") else why

    def migrate_slot(self, slot, to, timeout=T):
        """Moves slot and its keys to master ``to`` (a ``Node`` or a node
        id), as the cluster specification's resharding does it: the target
        IMPORTING, the source MIGRATING, the keys MIGRATEd in batches, then
        SETSLOT NODE on the target, the source and every other master.
        Returns once every running node agrees on the new owner and the
        cluster is ok."""
        to_id = to if isinstance(to, str) else to.id
        source = self.master_of(slot)
        target = self.node(to_id)
        if target.role != "master" or target.failed:
            raise ValueError(f"{target.address} is not a running master")
        if source.id == target.id:
            return
        _command(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
        _command(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
        client = RespClient(source.port)
        try:
            while True:
                keys = client.command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                if not keys:
                    break
                client.command("MIGRATE", target.host, target.port, "", 0, int(T * 1000), "KEYS", *keys)
        finally:
            client.close()
        _command(target.port, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        _command(source.port, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        for node in self.nodes():
            if node.role == "master" and not node.failed and node.id not in (source.id, target.id):
                _command(node.port, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        deadline = time.monotonic() + timeout
        while True:
            why = self._settled_without_replicas()
            if not why:
                owners = {self.master_of_on(port, slot) for port in self.ports}
                if owners == {target.id}:
                    return
                why = f"the nodes say slot {slot} is on {owners}"
            if time.monotonic() > deadline:
                raise AssertionError(f"slot {slot} did not move in {timeout} s ({why}); the logs:\n" + self.log())
            time.sleep(0.1)

    def master_of_on(self, port, slot):
        """The id of the master owning slot as the node on port sees it (None: no one)."""
        for node in self.nodes(port):
            if node.role == "master" and not node.failed and node.owns(slot):
                return node.id
        return None
