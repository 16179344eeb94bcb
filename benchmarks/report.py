"""Tables and plots of the fan-out benchmark, from the document that
``run.py`` writes (``results/<stem>.json``).

    python benchmarks/report.py benchmarks/results/2026-11-22.json

rewrites that run's ``.md`` and PNG files, e.g. after changing this file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FLOORS = ("floor-write", "floor-writev")
IDLE_TARGET_BYTES = 1024
# A load generator busier than this share of its core may have set the pace:
# the run's throughput is then a lower bound of the server's, its latency an
# upper bound. run.py records it per run as "loadgen_limited".
LOADGEN_LIMIT = 0.80
MARK = "†"

# The FastAPI rows (issue 14): roomcast's Room in a FastAPI app on uvicorn
# with roomcast's uvicorn protocol against roomcast's own Server, and
# against websocket_rooms on uvicorn. (target scenario, server, peer,
# goal): burst compares deliveries/s (the server's must be >= goal x the
# peer's), single compares server CPU per delivery (<= goal x the peer's).
FASTAPI = "roomcast-fastapi"
FASTAPI_SERVERS = ("roomcast", FASTAPI, "roomcast-fastapi-py", "websocket_rooms")
FASTAPI_TARGETS = (
    ("burst", FASTAPI, "roomcast", 0.8),
    ("burst", FASTAPI, "websocket_rooms", 50.0),
    ("single", FASTAPI, "roomcast", 1.2),
)
FASTAPI_CLIENTS = (1000, 10000)

# permessage-deflate (issue 15, run.py --deflate): roomcast compressing
# against roomcast without compression on the same payload and against the
# peers with their compression. Burst deliveries/s of roomcast-deflate >=
# goal x the server's; idle RSS per connection <= DEFLATE_IDLE_GOAL x
# roomcast's without compression; wire bytes per delivery <= WIRE_SLACK x
# each peer's ("as small as the peers'", a few header bytes aside).
DEFLATE = "roomcast-deflate"
DEFLATE_SERVERS = ("roomcast", DEFLATE, "socketify-deflate", "websockets-deflate", "aiohttp-deflate")
DEFLATE_TARGETS = (("roomcast", 0.7), ("socketify-deflate", 5.0), ("websockets-deflate", 100.0))
DEFLATE_PEERS = ("socketify-deflate", "websockets-deflate", "aiohttp-deflate")
DEFLATE_CLIENTS = (1000, 10000)
DEFLATE_IDLE_GOAL = 1.2
WIRE_SLACK = 1.05

# TLS (issue 16, run.py --tls): roomcast over TLS against roomcast in
# plaintext and against the peers over TLS. Burst deliveries/s of
# roomcast-tls >= goal x the server's, at TLS_CLIENTS.
TLS = "roomcast-tls"
TLS_SERVERS = ("roomcast", TLS, "socketify-tls", "websockets-tls")
TLS_TARGETS = (("roomcast", 0.4), ("socketify-tls", 3.0), ("websockets-tls", 30.0))
TLS_CLIENTS = (1000,)


# ------------------------------------------------------------------ helpers


def results(doc: dict, scenario: str) -> list[dict]:
    return [r for r in doc.get("results", []) if r["scenario"] == scenario]


def find(doc: dict, server: str, scenario: str, clients: int, size: int = 64, rate: float | None = None) -> dict | None:
    for r in doc.get("results", []):
        if (
            r["server"] == server
            and r["scenario"] == scenario
            and r["clients"] == clients
            and r["size"] == size
            and r.get("rate") == rate
            and r["status"] == "ok"
        ):
            return r
    return None


def server_order(doc: dict) -> list[str]:
    return list(doc["settings"]["servers"])


def n(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def ms(us: float | None) -> str:
    if us is None:
        return "–"
    return f"{us / 1000:.2f}" if us < 100_000 else f"{us / 1000:,.0f}"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def ratio(x: float | None) -> str:
    return "–" if x is None else (f"{x:.2f}×" if x < 10 else f"{x:,.0f}×")


def adv(mine: Any, theirs: float | None, higher_is_better: bool) -> float | None:
    """roomcast's advantage over a peer: > 1 means roomcast is better."""
    if not mine or not theirs:
        return None
    return mine / theirs if higher_is_better else theirs / mine


def limited(r: dict | None) -> bool:
    """The load generator was above LOADGEN_LIMIT of its core in this run
    (older results without the flag: judged from loadgen_busy)."""
    if r is None:
        return False
    if "loadgen_limited" in r:
        return bool(r["loadgen_limited"])
    busy = r.get("loadgen_busy")
    return busy is not None and busy > LOADGEN_LIMIT


def at_least(r: dict, text: str) -> str:
    """A throughput figure: a lower bound when the load generator was busy."""
    return f"≥ {text} {MARK}" if limited(r) else text


def at_most(r: dict, text: str) -> str:
    """A latency figure: an upper bound when the load generator was busy
    (its own queueing is in the figure)."""
    return f"≤ {text} {MARK}" if limited(r) else text


def loadgen_cell(r: dict) -> str:
    return pct(r.get("loadgen_busy"))


def footnote(rows: list[dict]) -> list[str]:
    """The note under a table that has marked rows."""
    if not any(limited(r) for r in rows if r.get("status") == "ok"):
        return []
    return [
        f"{MARK} The load generator used more than {LOADGEN_LIMIT:.0%} of its core in this run: it may"
        " have set the pace, so deliveries/s is at least the figure (≥) and latency at most the"
        " figure (≤); ratios involving it are bounds too.",
        "",
    ]


def status_cell(r: dict | None) -> str:
    if r is None:
        return "not run"
    err = (r.get("error") or "").replace("|", "/")
    if len(err) > 140:
        err = err[:137] + "..."
    return f"{r['status']}: {err}" if err else r["status"]


def all_rows(doc: dict, scenario: str, size: int | None = None, rate: float | None = None) -> list[dict]:
    order = {s: i for i, s in enumerate(server_order(doc))}
    rows = [
        r
        for r in results(doc, scenario)
        if (size is None or r["size"] == size) and (rate is None or r.get("rate") == rate)
    ]
    return sorted(rows, key=lambda r: (r["clients"], order.get(r["server"], 99)))


# ------------------------------------------------------------------ targets


def targets(doc: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each target of the issue."""
    out = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("met" if ok else "**missed**")

    def burst_vs(peer: str, clients: int, goal: float, label: str) -> None:
        rc, p = find(doc, "roomcast", "burst", clients), find(doc, peer, "burst", clients)
        if rc is None or p is None:
            missing = "roomcast" if rc is None else peer
            out.append((label, f"not measured ({missing} has no burst result at N={clients:,})", "–"))
            return
        r = rc["deliveries_per_sec"] / p["deliveries_per_sec"]
        out.append(
            (
                label,
                f"{r:.2f}× ({at_least(rc, n(rc['deliveries_per_sec']))} vs"
                f" {at_least(p, n(p['deliveries_per_sec']))} deliveries/s;"
                f" loadgen {loadgen_cell(rc)}, {loadgen_cell(p)} of its core)",
                verdict(r >= goal),
            )
        )

    burst_vs("socketify", 1000, 1.2, "burst W=64, N=1,000: ≥ 1.2× socketify")
    burst_vs("socketify", 10000, 3.0, "burst W=64, N=10,000: ≥ 3× socketify")
    for clients in (1000, 10000):
        burst_vs("websockets", clients, 50.0, f"burst W=64, N={clients:,}: ≥ 50× websockets")
    for clients in (1000, 10000):
        burst_vs("floor-writev", clients, 0.5, f"burst W=64, N={clients:,}: ≥ 0.5× the writev() floor")
    for clients in (1000, 10000):
        label = f"single W=1, N={clients:,}: server CPU per delivery ≤ 1.1× the write() floor"
        rc, fl = find(doc, "roomcast", "single", clients), find(doc, "floor-write", "single", clients)
        if (
            rc is None
            or fl is None
            or not rc.get("server_cpu_us_per_delivery")
            or not fl.get("server_cpu_us_per_delivery")
        ):
            out.append((label, f"not measured at N={clients:,}", "–"))
        else:
            a, b = rc["server_cpu_us_per_delivery"], fl["server_cpu_us_per_delivery"]
            out.append(
                (
                    label,
                    f"{a / b:.2f}× ({a:.3f} vs {b:.3f} µs; loadgen {loadgen_cell(rc)}, {loadgen_cell(fl)} of its core)",
                    verdict(a <= 1.1 * b),
                )
            )
    label = "p99 latency, N=10,000, W=1: ≤ 1.2× the floor's p99"
    rc = find(doc, "roomcast", "single", 10000)
    floors = [f for f in (find(doc, name, "single", 10000) for name in FLOORS) if f]
    if rc is None or not floors:
        out.append((label, "not measured at N=10,000", "–"))
    else:
        best = min(floors, key=lambda f: f["latency_us"]["p99"])
        a, b = rc["latency_us"]["p99"], best["latency_us"]["p99"]
        out.append(
            (
                label,
                f"{a / b:.2f}× ({at_most(rc, ms(a))} vs {at_most(best, ms(b))} ms, {best['server']};"
                f" loadgen {loadgen_cell(rc)}, {loadgen_cell(best)} of its core)",
                verdict(a <= 1.2 * b),
            )
        )
    idle = [r for r in results(doc, "idle") if r["server"] == "roomcast" and r["status"] == "ok"]
    label = "RSS per idle connection at N=10,000: ≤ 1 KiB"
    if not idle:
        out.append((label, "not measured", "–"))
    else:
        r = idle[0]
        per = r["rss_per_idle_conn_bytes"]
        out.append(
            (
                label,
                f"{per:,.0f} bytes (N={r['clients']:,})",
                verdict(per <= IDLE_TARGET_BYTES and r["clients"] >= 10000)
                if r["clients"] >= 10000
                else f"– (N={r['clients']:,})",
            )
        )
    return out


def median_cpu_run(doc: dict, server: str, clients: int, size: int = 64) -> dict | None:
    """The single (W=1) run of a server with the median server CPU per
    delivery (the lower middle), with "of_runs": how many runs it is the
    median of. A table row is the run with the median deliveries/s, whose
    CPU per delivery on a shared machine may be any of the runs'; a target
    on CPU takes the median of CPU. Without the runs (an older document):
    the table's row."""
    runs = [
        r
        for r in doc.get("runs", [])
        if r["server"] == server
        and r["scenario"] == "single"
        and r["clients"] == clients
        and r["size"] == size
        and r["status"] == "ok"
        and r.get("server_cpu_us_per_delivery")
    ]
    if not runs:
        return find(doc, server, "single", clients, size)
    ordered = sorted(runs, key=lambda r: r["server_cpu_us_per_delivery"])
    return {**ordered[(len(ordered) - 1) // 2], "of_runs": len(runs)}


def fastapi_ratios(doc: dict) -> list[dict]:
    """The targets of the FastAPI rows at each N (1,000 and 10,000, and any
    other N roomcast-fastapi ran at), one dict each: scenario, clients,
    server, peer, goal, figure (deliveries_per_sec for burst,
    server_cpu_us_per_delivery for single), mine and theirs (the figures),
    ratio (mine / theirs), met (True, False, None when not measured),
    missing (the server without a result), loadgen (the two runs' load
    generator shares), runs (how many runs each figure is the median of)
    and bound. Burst takes the table's rows (the runs with the median
    deliveries/s); single, each server's run with the median CPU per
    delivery (median_cpu_run). bound:

    - None: neither run's load generator was above LOADGEN_LIMIT;
    - "lower" / "upper": burst, one run's deliveries/s is a lower bound, so
      the ratio is at least (server's run) or at most (peer's run) the
      figure;
    - "unknown": both runs' (burst), or either run's (single: the load
      generator set the pace; CPU per delivery is the server's cost at
      that pace, not a bound either way).

    ``certain`` says whether the verdict holds whatever the bound hides."""
    measured = {r["clients"] for r in doc.get("results", []) if r["server"] == FASTAPI and r["status"] == "ok"}
    out = []
    for clients in sorted(set(FASTAPI_CLIENTS) | measured):
        for scenario, server, peer, goal in FASTAPI_TARGETS:
            figure = "deliveries_per_sec" if scenario == "burst" else "server_cpu_us_per_delivery"
            if scenario == "burst":
                mine, theirs = find(doc, server, scenario, clients), find(doc, peer, scenario, clients)
            else:
                mine, theirs = median_cpu_run(doc, server, clients), median_cpu_run(doc, peer, clients)
            item: dict[str, Any] = dict(
                scenario=scenario, clients=clients, server=server, peer=peer, goal=goal, figure=figure
            )
            missing = [name for name, r in ((server, mine), (peer, theirs)) if r is None or not r.get(figure)]
            if missing or mine is None or theirs is None:
                out.append({**item, "ratio": None, "met": None, "missing": missing[0], "bound": None, "certain": False})
                continue
            a, b = mine[figure], theirs[figure]
            r = a / b
            met = r >= goal if scenario == "burst" else r <= goal
            lim_a, lim_b = limited(mine), limited(theirs)
            if not (lim_a or lim_b):
                bound = None
            elif scenario == "burst" and lim_a != lim_b:
                bound = "lower" if lim_a else "upper"
            else:
                bound = "unknown"
            certain = bound is None or (bound == "lower" and met) or (bound == "upper" and not met)
            out.append(
                {
                    **item,
                    "mine": a,
                    "theirs": b,
                    "ratio": r,
                    "met": met,
                    "missing": None,
                    "bound": bound,
                    "certain": certain,
                    "loadgen": [mine.get("loadgen_busy"), theirs.get("loadgen_busy")],
                    "runs": [mine.get("of_runs", 1), theirs.get("of_runs", 1)],
                }
            )
    return out


def fastapi_targets(doc: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows of the FastAPI targets."""
    rows = []
    for t in fastapi_ratios(doc):
        peer = "roomcast's own Server" if t["peer"] == "roomcast" else t["peer"] + " on uvicorn"
        if t["scenario"] == "burst":
            label = f"burst W=64, N={t['clients']:,}: {t['server']} ≥ {t['goal']:g}× {peer}"
        else:
            label = f"single W=1, N={t['clients']:,}: {t['server']} server CPU per delivery ≤ {t['goal']:g}× {peer}'s"
        if t["met"] is None:
            rows.append(
                (label, f"not measured ({t['missing']} has no {t['scenario']} result at N={t['clients']:,})", "–")
            )
            continue
        sign = {"lower": "≥ ", "upper": "≤ "}.get(t["bound"] or "", "")
        mark = f" {MARK}" if t["bound"] else ""
        shares = ", ".join(pct(x) for x in t["loadgen"])
        if t["scenario"] == "burst":
            figures = f"{n(t['mine'])} vs {n(t['theirs'])} deliveries/s"
        else:
            of = t["runs"]
            figures = f"{t['mine']:.3f} vs {t['theirs']:.3f} µs" + (
                f", the median of {of[0]} and {of[1]} runs" if max(of) > 1 else ""
            )
        rows.append(
            (
                label,
                f"{sign}{ratio(t['ratio'])}{mark} ({figures}; loadgen {shares} of its core)",
                ("met" if t["met"] else "**missed**") + ("" if t["certain"] else f" {MARK}"),
            )
        )
    return rows


def deflate_size(doc: dict) -> int:
    """The message size of the deflate rows: the run's first burst size."""
    sizes = doc["settings"].get("sizes") or [1024]
    return sizes[0]


def burst_target(
    doc: dict, mine_name: str, peer: str, clients: int, size: int, goal: float, label: str
) -> tuple[str, str, str]:
    """(target, measured, verdict): server mine_name's burst deliveries/s
    >= goal x peer's at N = clients. A ratio from a run whose load
    generator was above LOADGEN_LIMIT is a bound (≥ when it is mine's,
    ≤ when the peer's); a verdict such a bound could turn is marked."""
    mine = find(doc, mine_name, "burst", clients, size)
    theirs = find(doc, peer, "burst", clients, size)
    if mine is None or theirs is None:
        missing = mine_name if mine is None else peer
        return (label, f"not measured ({missing} has no burst result at N={clients:,})", "–")
    r = mine["deliveries_per_sec"] / theirs["deliveries_per_sec"]
    lim_a, lim_b = limited(mine), limited(theirs)
    sign = "≥ " if lim_a and not lim_b else "≤ " if lim_b and not lim_a else ""
    certain = not (lim_a or lim_b) or (lim_a and not lim_b and r >= goal) or (lim_b and not lim_a and r < goal)
    return (
        label,
        f"{sign}{ratio(r)}{f' {MARK}' if lim_a or lim_b else ''}"
        f" ({n(mine['deliveries_per_sec'])} vs {n(theirs['deliveries_per_sec'])} deliveries/s;"
        f" loadgen {loadgen_cell(mine)}, {loadgen_cell(theirs)} of its core)",
        ("met" if r >= goal else "**missed**") + ("" if certain else f" {MARK}"),
    )


def deflate_targets(doc: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows of the permessage-deflate targets."""
    rows: list[tuple[str, str, str]] = []
    size = deflate_size(doc)
    for clients in DEFLATE_CLIENTS:
        for peer, goal in DEFLATE_TARGETS:
            what = "roomcast without compression (same payload)" if peer == "roomcast" else peer
            label = f"burst W=64, N={clients:,}, S={size:,}: {DEFLATE} ≥ {goal:g}× {what}"
            rows.append(burst_target(doc, DEFLATE, peer, clients, size, goal, label))
    idle_clients = doc["settings"].get("idle_clients", 10000)
    label = (
        f"RSS per idle connection, N={idle_clients:,}: {DEFLATE} ≤ {DEFLATE_IDLE_GOAL:g}× roomcast without compression"
    )
    a, b = find(doc, DEFLATE, "idle", idle_clients, size), find(doc, "roomcast", "idle", idle_clients, size)
    if a is None or b is None:
        rows.append((label, f"not measured ({DEFLATE if a is None else 'roomcast'} has no idle result)", "–"))
    else:
        x, y = a["rss_per_idle_conn_bytes"], b["rss_per_idle_conn_bytes"]
        rows.append(
            (
                label,
                f"{x / y:.2f}× ({n(x)} vs {n(y)} bytes per connection)" if y > 0 else f"{n(x)} vs {n(y)} bytes",
                ("met" if x <= DEFLATE_IDLE_GOAL * y else "**missed**") if y > 0 else "–",
            )
        )
    clients = DEFLATE_CLIENTS[0]
    mine = find(doc, DEFLATE, "burst", clients, size)
    for peer in DEFLATE_PEERS:
        label = f"wire bytes per delivery, N={clients:,}: {DEFLATE} ≤ {WIRE_SLACK:g}× {peer}"
        theirs = find(doc, peer, "burst", clients, size)
        if mine is None or theirs is None or not theirs.get("wire_bytes_per_delivery"):
            missing = DEFLATE if mine is None else peer
            rows.append((label, f"not measured ({missing} has no burst result at N={clients:,})", "–"))
            continue
        x, y = mine["wire_bytes_per_delivery"], theirs["wire_bytes_per_delivery"]
        keeps = theirs.get("deflate_context_takeover_connections", 0) > 0
        rows.append(
            (
                label,
                f"{x / y:.2f}× ({x:,.1f} vs {y:,.1f} bytes)"
                + ("; the peer keeps its context across messages" if keeps else ""),
                "met" if x <= WIRE_SLACK * y else "**missed**",
            )
        )
    return rows


def deflate_cell(r: dict) -> str:
    """What the connections negotiated in a run."""
    if not r.get("deflate_offered"):
        return "not offered"
    got, total = r.get("deflate_connections", 0), r.get("connections_opened", 0)
    if got == 0:
        return "declined"
    keep = r.get("deflate_context_takeover_connections", 0)
    return f"{got:,}/{total:,}" + (", context takeover" if keep else ", no context takeover")


def targets_table(rows: list[tuple[str, str, str]], bound: str) -> list[str]:
    """A section's table of targets, and what a load-bound run's ratio
    means (``bound``) when a row has one."""
    lines = ["| target | measured | verdict |", "| --- | --- | --- |"]
    lines += [f"| {t} | {meas} | {v} |" for t, meas, v in rows]
    lines.append("")
    if any(MARK in meas for _, meas, _ in rows):
        lines += [
            f"{MARK} A run whose load generator used more than {LOADGEN_LIMIT:.0%} of its core: its deliveries/s"
            " is a lower bound, so " + bound,
            "",
        ]
    return lines


def deflate_section(doc: dict) -> list[str]:
    """The permessage-deflate targets, then each server's burst and idle
    figures with what was negotiated and the bytes on the wire."""
    size = deflate_size(doc)
    lines = [
        "## permessage-deflate",
        "",
        f"Every connection offers `permessage-deflate; client_max_window_bits`; the publisher sends each"
        f" message plain, a JSON chat/ticker update of {size:,} bytes (`loadgen --payload json`, about 2.5×"
        " with a standalone deflate). `roomcast` is roomcast without compression (`servers/roomcast_chat.py`),"
        ' `roomcast-deflate` with `compression="deflate", compression_threshold=128`'
        " (`roomcast_chat.py --deflate`), `socketify-deflate` uWS's shared compressor with"
        " `publish(..., compress=True)`, `websockets-deflate` and `aiohttp-deflate` their libraries'"
        " default compression (context takeover: each message compressed for each connection).",
        "",
    ]
    lines += targets_table(
        deflate_targets(doc),
        "the ratio is a bound (≥ when it is roomcast-deflate's, ≤ when the peer's);"
        " a verdict marked † could change with a faster load generator.",
    )
    lines += [
        "Wire bytes per delivery: the bytes the clients received while the messages were published (frames"
        " with their headers) over the deliveries; text/wire is the message size over that.",
        "",
        "| N | server | deflate negotiated | deliveries/s | roomcast-deflate × | server CPU µs/delivery"
        " | wire bytes/delivery | text/wire | loadgen CPU (of its core) | server busy | runs |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    order = {name: i for i, name in enumerate(server_order(doc))}
    burst = sorted(
        (r for r in results(doc, "burst") if r["size"] == size),
        key=lambda r: (r["clients"], order.get(r["server"], 99)),
    )
    for r in burst:
        if r["status"] != "ok":
            lines.append(f"| {r['clients']:,} | {r['server']} | {status_cell(r)} | | | | | | | | |")
            continue
        mine = find(doc, DEFLATE, "burst", r["clients"], size)
        wire = r.get("wire_bytes_per_delivery")
        lines.append(
            f"| {r['clients']:,} | {r['server']} | {deflate_cell(r)} | {at_least(r, n(r['deliveries_per_sec']))}"
            f" | {ratio(adv(mine and mine['deliveries_per_sec'], r['deliveries_per_sec'], True))}"
            f" | {n(r.get('server_cpu_us_per_delivery'), 3)} | {n(wire, 1)}"
            f" | {ratio(size / wire) if wire else '–'} | {loadgen_cell(r)} | {pct(r.get('server_busy'))}"
            f" | {r['repeats_ok']}/{r['repeats']} |"
        )
    lines.append("")
    lines += footnote(burst)
    idle = sorted(results(doc, "idle"), key=lambda r: (r["clients"], order.get(r["server"], 99)))
    if idle:
        lines += [
            "| N | server | deflate negotiated | bytes per idle connection | × roomcast without compression |",
            "| ---: | --- | --- | ---: | ---: |",
        ]
        for r in idle:
            if r["status"] != "ok":
                lines.append(f"| {r['clients']:,} | {r['server']} | {status_cell(r)} | | |")
                continue
            base = find(doc, "roomcast", "idle", r["clients"], r["size"])
            per = r["rss_per_idle_conn_bytes"]
            rel = (
                f"{per / base['rss_per_idle_conn_bytes']:.2f}×" if base and base["rss_per_idle_conn_bytes"] > 0 else "–"
            )
            lines.append(f"| {r['clients']:,} | {r['server']} | {deflate_cell(r)} | {n(per)} | {rel} |")
        lines.append("")
    return lines


def tls_targets(doc: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows of the TLS targets."""
    rows: list[tuple[str, str, str]] = []
    size = (doc["settings"].get("sizes") or [64])[0]
    for clients in TLS_CLIENTS:
        for peer, goal in TLS_TARGETS:
            what = "roomcast in plaintext" if peer == "roomcast" else peer
            label = f"burst W=64, N={clients:,}, S={size:,}: {TLS} ≥ {goal:g}× {what}"
            rows.append(burst_target(doc, TLS, peer, clients, size, goal, label))
    return rows


def tls_cell(r: dict) -> str:
    """What a run's connections negotiated: "TLSv1.3 TLS_AES_256_GCM_SHA384",
    or plaintext."""
    if not r.get("tls"):
        return "plaintext"
    return f"{r.get('tls_version', '?')} {r.get('tls_cipher', '')}".strip()


def tls_section(doc: dict) -> list[str]:
    """The TLS targets, then each server's burst and single figures, then
    new connections per second."""
    s = doc["settings"]
    size = (s.get("sizes") or [64])[0]
    key = {"ec": "ECDSA P-256", "rsa": "RSA 2048"}.get(s.get("tls_key", "ec"), s.get("tls_key"))
    lines = [
        "## TLS",
        "",
        f"`roomcast-tls`, `socketify-tls` and `websockets-tls` serve TLS with a self-signed {key} certificate"
        " made for the run (`openssl req -x509`); `roomcast` is roomcast in plaintext (`servers/roomcast_chat.py`)."
        " roomcast with its `Server`'s `ssl_certfile`/`ssl_keyfile`, socketify with its SSL app (uSockets),"
        " websockets with an `ssl.SSLContext` (asyncio). The load generator (`loadgen --tls`, OpenSSL, no"
        " certificate check, ALPN http/1.1 offered) decrypts every delivery: its share of its core is next to"
        " each figure.",
        "",
    ]
    lines += targets_table(
        tls_targets(doc),
        "the ratio is a bound (≥ when it is roomcast-tls's, ≤ when the peer's);"
        " a verdict marked † could change with a faster load generator.",
    )
    lines += [
        "| N | server | TLS | burst deliveries/s | roomcast-tls × | burst CPU µs/delivery | loadgen CPU (burst)"
        " | single deliveries/s | single CPU µs/delivery | single p99 ms | loadgen CPU (single) |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = {name: i for i, name in enumerate(server_order(doc))}
    shown: list[dict] = []
    clients = sorted({r["clients"] for r in results(doc, "burst") + results(doc, "single") if r["size"] == size})
    for c in clients:
        for name in sorted({r["server"] for r in doc.get("results", [])}, key=lambda x: order.get(x, 99)):
            burst = next((x for x in results(doc, "burst") if x["server"] == name and x["clients"] == c), None)
            single = next((x for x in results(doc, "single") if x["server"] == name and x["clients"] == c), None)
            if burst is None and single is None:
                continue
            ok = [x for x in (burst, single) if x is not None and x["status"] == "ok"]
            shown += ok
            cells = [tls_cell(ok[0]) if ok else ""]
            if burst is not None and burst["status"] == "ok":
                mine = find(doc, TLS, "burst", c, size)
                cells += [
                    at_least(burst, n(burst["deliveries_per_sec"])),
                    ratio(adv(mine and mine["deliveries_per_sec"], burst["deliveries_per_sec"], True)),
                    n(burst.get("server_cpu_us_per_delivery"), 3),
                    loadgen_cell(burst),
                ]
            else:
                cells += [status_cell(burst), "", "", ""]
            if single is not None and single["status"] == "ok":
                cells += [
                    at_least(single, n(single["deliveries_per_sec"])),
                    n(single.get("server_cpu_us_per_delivery"), 3),
                    at_most(single, ms(single["latency_us"]["p99"])),
                    loadgen_cell(single),
                ]
            else:
                cells += [status_cell(single), "", "", ""]
            lines.append(f"| {c:,} | {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += footnote(shown)
    hs = sorted(
        results(doc, "handshake") + results(doc, "resume"), key=lambda r: (r["scenario"], order.get(r["server"], 99))
    )
    if hs:
        lines += [
            "### New connections per second",
            "",
            f"Each connection: `connect()`, the TLS handshake, the upgrade, a close frame and the server's"
            " answer; a full handshake (no session cache), or with resumption (`loadgen --tls-resume`: each"
            " connection offers the session of the server's latest ticket; how many the server resumed is"
            f" shown); {s.get('handshake_batch', 32)} in flight at a time, new ones"
            f" started for {s['seconds']:g} s after a warm-up of {min(50, s.get('handshakes', 20000) // 10)} or more"
            " (`loadgen --handshakes`). Server CPU per connection is its CPU time over the connections"
            " made: its cost whatever set the pace.",
            "",
            "| server | handshake | TLS | connections/s | server CPU µs/connection | server busy"
            " | loadgen CPU (of its core) | loadgen µs/connection | to the 101: p50 ms | p99 ms | runs |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in hs:
            kind = "no TLS" if r.get("tls") is False else "full" if r["scenario"] == "handshake" else "resumption"
            if r["status"] != "ok":
                lines.append(f"| {r['server']} | {kind} | {status_cell(r)} | | | | | | | | |")
                continue
            if r.get("tls_resume"):
                kind += f" ({r.get('tls_resumed', 0):,} of {r.get('tls_handshakes', 0):,} resumed)"
            lat = r.get("handshake_latency_us", {})
            lines.append(
                f"| {r['server']} | {kind} | {tls_cell(r)} | {at_least(r, n(r['handshakes_per_sec']))}"
                f" | {n(r.get('server_cpu_us_per_handshake'))} | {pct(r.get('server_busy'))} | {loadgen_cell(r)}"
                f" | {n(r.get('loadgen_cpu_us_per_handshake'))} | {at_most(r, ms(lat.get('p50')))}"
                f" | {at_most(r, ms(lat.get('p99')))} | {r['repeats_ok']}/{r['repeats']} |"
            )
        lines.append("")
        lines += footnote(hs)
    return lines


# ----------------------------------------------------------------- markdown


def fastapi_section(doc: dict) -> list[str]:
    """The FastAPI rows: the targets, then the four servers side by side."""
    lines = [
        "## FastAPI rows",
        "",
        "The same chat room four ways: `roomcast`, roomcast's own `Server`"
        " (`servers/roomcast_chat.py`); `roomcast-fastapi`, roomcast's `Room` in a FastAPI app on uvicorn"
        " with `--ws roomcast.uvicorn:WebSocketProtocol` (the C core serves the connections);"
        " `roomcast-fastapi-py`, the same app on uvicorn's own `websockets-sansio` protocol (the room"
        " reaches each member through Python); `websocket_rooms`, the library roomcast replaces, on"
        " uvicorn (`servers/roomcast_fastapi_chat.py PORT roomcast|uvicorn`,"
        " `servers/websocket_rooms_chat.py`).",
        "",
    ]
    lines += targets_table(
        fastapi_targets(doc),
        "a burst ratio is a bound (≥ when it is the numerator's, ≤ when the"
        " denominator's, either way when both); for single, the load generator set the pace and CPU"
        " per delivery is the server's cost at that pace. A verdict marked † could change with a"
        " faster load generator.",
    )
    lines += [
        "Burst targets compare the rows below (each the run with the median deliveries/s); the CPU"
        " target compares each server's single run with the median CPU per delivery, which may be"
        " another run than the row's.",
        "",
        "| N | server | burst deliveries/s | burst CPU µs/delivery | loadgen CPU (burst) | single deliveries/s"
        " | single CPU µs/delivery | loadgen CPU (single) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    shown: list[dict] = []
    clients = sorted({r["clients"] for r in doc.get("results", []) if r["server"] in FASTAPI_SERVERS})
    for c in clients:
        for name in FASTAPI_SERVERS:
            cells = []
            for scenario in ("burst", "single"):
                r = next(
                    (
                        x
                        for x in results(doc, scenario)
                        if x["server"] == name and x["clients"] == c and x["size"] == 64
                    ),
                    None,
                )
                if r is None or r["status"] != "ok":
                    # the reason is in the tables below
                    cells += ["not run" if r is None else r["status"], "", ""]
                    continue
                shown.append(r)
                dps = at_least(r, n(r["deliveries_per_sec"]))
                cpu = n(r.get("server_cpu_us_per_delivery"), 3)
                cells += [dps, cpu, loadgen_cell(r)]
            lines.append(f"| {c:,} | {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += footnote(shown)
    return lines


def markdown(doc: dict, pngs: dict | None = None) -> str:
    m, s = doc["machine"], doc["settings"]
    lines: list[str] = []
    add = lines.append
    add(f"# Fan-out benchmark: {doc['started'][:10]} ({s['mode']})")
    add("")
    add(
        f"Command: `{doc['command']}`; started {doc['started']}, finished {doc.get('finished', '?')}"
        f" ({doc.get('elapsed_seconds', 0) / 60:.1f} min)."
        + (" **Interrupted: partial results.**" if doc.get("interrupted") else "")
    )
    add("")
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    add(
        f"Machine: {m['cpu_model']}, {m['cpus']} CPUs; {m['os']}, Linux {m['kernel']}; Python {m['python']};"
        f" {m['gcc']}; libuv {m['libuv']}, wslay {m['libwslay']}; {libs}."
    )
    add("")
    loads = [r["loadavg_before"] for r in doc["runs"] if "loadavg_before" in r]
    pin = "server on CPU 0, load generator on CPU 1 (taskset)" if s.get("pinned") else "not pinned"
    add(
        f"Settings: {pin}; each configuration {s['repeat']}× (median kept), a fresh server per run;"
        f" burst/single runs send M = {s['deliveries']:,} / N messages or for {s['seconds']:g} s,"
        f" whichever ends first; {s['budget']:g} s at most per run."
        + (
            f" Load average before the runs: {min(loads):.1f} to {max(loads):.1f}"
            " (the machine was shared: read differences under ±30% as noise)."
            if loads
            else ""
        )
    )
    add("")
    add(
        "“roomcast ×” is roomcast's advantage over the server of the row: above 1, roomcast is"
        " better (more deliveries/s, or less CPU, latency, memory) by that factor."
    )
    add("")

    if FASTAPI in server_order(doc):
        lines.extend(fastapi_section(doc))
    if DEFLATE in server_order(doc):
        lines.extend(deflate_section(doc))
    if TLS in server_order(doc):
        lines.extend(tls_section(doc))

    # The fan-out targets compare roomcast with peers a --fastapi, --deflate
    # or --tls run has not.
    if s["mode"] not in ("fastapi", "deflate", "tls"):
        add("## Targets of the issue")
        add("")
        add("| target | measured | verdict |")
        add("| --- | --- | --- |")
        rows = targets(doc)
        for t, meas, v in rows:
            add(f"| {t} | {meas} | {v} |")
        add("")
        if any(MARK in meas for _, meas, _ in rows):
            add(
                f"{MARK} A figure from a run whose load generator used more than {LOADGEN_LIMIT:.0%} of its core:"
                " a bound (≥ for deliveries/s, ≤ for latency), and the verdict with it."
            )
            add("")

    add("## Servers")
    add("")
    problems = doc.get("unavailable", {})
    add("| server | status |")
    add("| --- | --- |")
    for name in server_order(doc):
        add(f"| {name} | {'unavailable: ' + problems[name].replace('|', '/') if name in problems else 'ran'} |")
    add("")

    for scenario, title in (("burst", "Burst fan-out (W=64)"), ("single", "Single fan-out (W=1)")):
        sizes = sorted({r["size"] for r in results(doc, scenario)})
        for size in sizes:
            add(f"## {title}, S={size} B")
            add("")
            add(
                "| N | server | deliveries/s | roomcast × | server CPU µs/delivery | roomcast × | p50 ms | p99 ms"
                " | loadgen CPU (of its core) | server busy | messages | runs |"
            )
            add("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
            table_rows = all_rows(doc, scenario, size=size)
            for r in table_rows:
                rc = find(doc, "roomcast", scenario, r["clients"], size)
                if r["status"] != "ok":
                    add(f"| {r['clients']:,} | {r['server']} | {status_cell(r)} | | | | | | | | | |")
                    continue
                lat = r["latency_us"]
                cpu = r.get("server_cpu_us_per_delivery")
                bounded = f" {MARK}" if limited(r) or limited(rc) else ""
                dps_ratio = ratio(adv(rc and rc["deliveries_per_sec"], r["deliveries_per_sec"], True))
                add(
                    f"| {r['clients']:,} | {r['server']} | {at_least(r, n(r['deliveries_per_sec']))}"
                    f" | {dps_ratio}{bounded if dps_ratio != '–' else ''}"
                    f" | {n(cpu, 3)} | {ratio(adv(rc and rc.get('server_cpu_us_per_delivery'), cpu, False))}"
                    f" | {at_most(r, ms(lat['p50']))} | {at_most(r, ms(lat['p99']))} | {loadgen_cell(r)}"
                    f" | {pct(r.get('server_busy'))} | {r['sent']:,} | {r['repeats_ok']}/{r['repeats']} |"
                )
            add("")
            lines.extend(footnote(table_rows))

    lat_rows = results(doc, "latency")
    if lat_rows:
        add("## Latency at a fixed publish rate (S=64 B)")
        add("")
        add(
            "| N | rate msg/s | server | p50 ms | p99 ms | p99.9 ms | max ms | roomcast × (p99) | sent msg/s"
            " | loadgen CPU (of its core) | server busy | note |"
        )
        add("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        order = {x: i for i, x in enumerate(server_order(doc))}
        for r in sorted(lat_rows, key=lambda r: (r["rate"], r["clients"], order.get(r["server"], 99))):
            if r["status"] != "ok":
                add(f"| {r['clients']:,} | {r['rate']:g} | {r['server']} | {status_cell(r)} | | | | | | | | |")
                continue
            rc = find(doc, "roomcast", "latency", r["clients"], 64, r["rate"])
            lat = r["latency_us"]
            note = "saturated: could not keep the rate" if r.get("saturated") else ""
            add(
                f"| {r['clients']:,} | {r['rate']:g} | {r['server']} | {at_most(r, ms(lat['p50']))}"
                f" | {at_most(r, ms(lat['p99']))} | {at_most(r, ms(lat['p999']))} | {at_most(r, ms(lat['max']))}"
                f" | {ratio(adv(rc and rc['latency_us']['p99'], lat['p99'], False))}"
                f" | {r.get('rate_achieved', 0):.1f} | {loadgen_cell(r)} | {pct(r.get('server_busy'))} | {note} |"
            )
        add("")
        lines.extend(footnote(lat_rows))

    idle = results(doc, "idle")
    if idle:
        add("## Resident memory per idle connection")
        add("")
        add(
            "| N | server | bytes per idle connection | roomcast × | RSS with 100 connections | RSS with N"
            " | loadgen CPU (of its core) | note |"
        )
        add("| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in all_rows(doc, "idle"):
            if r["status"] != "ok":
                add(f"| {r['clients']:,} | {r['server']} | {status_cell(r)} | | | | | |")
                continue
            rc = find(doc, "roomcast", "idle", r["clients"], r["size"])
            per = r["rss_per_idle_conn_bytes"]
            add(
                f"| {r['clients']:,} | {r['server']} | {n(per)}"
                f" | {ratio(adv(rc and rc['rss_per_idle_conn_bytes'], per, False))}"
                f" | {r['rss_before_bytes'] / 2**20:.1f} MiB | {r['rss_after_bytes'] / 2**20:.1f} MiB"
                f" | {loadgen_cell(r)} | {'' if r.get('rss_quiet', True) else 'server never went quiet'} |"
            )
        add("")
        add(
            "(Memory does not depend on the load generator's speed: its CPU share, over the whole run here,"
            " marks nothing.)"
        )
        add("")

    connect: dict = {}
    for r in doc.get("results", []):
        if r["status"] == "ok" and r["scenario"] not in ("idle", "handshake", "resume"):
            connect.setdefault(r["server"], {}).setdefault(r["clients"], []).append(r["connect_seconds_median"])
    if connect:
        ns = sorted({c for per in connect.values() for c in per})
        add("## Time to open N connections (seconds, handshakes 500 at a time)")
        add("")
        add("| server | " + " | ".join(f"N={c:,}" for c in ns) + " |")
        add("| --- | " + " | ".join("---:" for _ in ns) + " |")
        for name in server_order(doc):
            if name in connect:
                cells = []
                for c in ns:
                    v = connect[name].get(c)
                    cells.append("–" if not v else f"{sorted(v)[(len(v) - 1) // 2]:.2f}")
                add(f"| {name} | " + " | ".join(cells) + " |")
        add("")

    sc_server = s.get("selfcheck_server", "floor-writev")
    checks = [
        r
        for r in doc["runs"]
        if r["server"] == sc_server
        and r["scenario"] == "burst"
        and r["status"] == "ok"
        and r.get("client_cpu_seconds")
        and r.get("server_cpu_seconds")
    ]
    add("## Load generator self-check")
    add("")
    if not checks:
        add(f"No burst run against {sc_server} in this run: no self-check.")
    else:
        add(
            f"Burst runs against the fastest server ({sc_server}). Each process's CPU time per delivery"
            " gives the deliveries/s it could sustain with a whole core to itself (capacity); the load"
            " generator has spare capacity when its capacity exceeds the server's, i.e. the server, not"
            " the load generator, sets the pace. (Busy: CPU time over publishing time; on a shared"
            " machine both stay well below 100%, which is why capacities are compared, not busy shares.)"
        )
        add("")
        add(
            "| N | S | deliveries/s | loadgen µs/delivery | server µs/delivery | loadgen capacity"
            " | server capacity | loadgen CPU (of its core) | server busy | deliveries per read | verdict |"
        )
        add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in sorted(checks, key=lambda r: (r["clients"], r["size"])):
            lg = r["client_cpu_seconds"] * 1e6 / r["deliveries"]
            sv = r["server_cpu_seconds"] * 1e6 / r["deliveries"]
            spare = sv / lg
            verdict = (
                f"spare capacity ({spare:.1f}× the server's)"
                if spare > 1.0
                else f"**load generator may limit** ({spare:.2f}× the server's)"
            )
            add(
                f"| {r['clients']:,} | {r['size']} | {at_least(r, n(r['deliveries_per_sec']))} | {lg:.3f} | {sv:.3f}"
                f" | {n(1e6 / lg)} | {n(1e6 / sv)} | {loadgen_cell(r)}"
                f" | {pct(r.get('server_busy'))} | {n(r.get('deliveries_per_read'), 1)} | {verdict} |"
            )
        lines.extend([""] + footnote(checks)[:-1])
    add("")

    if pngs:
        add("## Plots")
        add("")
        for title, p in pngs.items():
            add(f"![{title}]({p.name})")
            add("")
    add("How the figures are computed and how to read them: `benchmarks/README.md`.")
    add("")
    return "\n".join(lines)


# -------------------------------------------------------------------- plots

STYLE: dict[str, dict[str, Any]] = {
    "roomcast": dict(color="#d62728", lw=2.6, marker="o", zorder=5),
    "floor-writev": dict(color="#444444", ls="--", marker="s"),
    "floor-write": dict(color="#999999", ls="--", marker="s"),
    "socketify": dict(color="#1f77b4", marker="^"),
    "picows": dict(color="#2ca02c", marker="v"),
    "aiohttp": dict(color="#9467bd", marker="D"),
    "websockets": dict(color="#ff7f0e", marker="P"),
    "websocket_rooms": dict(color="#8c564b", marker="X"),
    "roomcast-fastapi": dict(color="#e377c2", lw=2.2, marker="o"),
    "roomcast-fastapi-py": dict(color="#e377c2", ls=":", marker="o"),
    "roomcast-deflate": dict(color="#d62728", lw=2.2, ls="--", marker="o", zorder=5),
    "socketify-deflate": dict(color="#1f77b4", ls="--", marker="^"),
    "websockets-deflate": dict(color="#ff7f0e", ls="--", marker="P"),
    "aiohttp-deflate": dict(color="#9467bd", ls="--", marker="D"),
    "roomcast-tls": dict(color="#d62728", lw=2.2, ls="-.", marker="o", zorder=5),
    "socketify-tls": dict(color="#1f77b4", ls="-.", marker="^"),
    "websockets-tls": dict(color="#ff7f0e", ls="-.", marker="P"),
}


def plots(doc: dict, outdir: Path, stem: str) -> dict:
    """Writes the PNGs; returns {title: path}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return {}
    out: dict = {}
    order = server_order(doc)

    fan = [r for r in doc.get("results", []) if r["scenario"] in ("burst", "single") and r["status"] == "ok"]
    if fan:
        sizes = sorted({r["size"] for r in fan})
        ns = sorted({r["clients"] for r in fan})
        kinds = [
            (sc, t)
            for sc, t in (("burst", "burst, W=64"), ("single", "single, W=1"))
            if any(r["scenario"] == sc for r in fan)
        ]
        fig, axes = plt.subplots(len(kinds), len(sizes), figsize=(6.2 * len(sizes), 4.5 * len(kinds)), squeeze=False)
        for row, (scenario, title) in enumerate(kinds):
            for col, size in enumerate(sizes):
                ax = axes[row][col]
                for name in order:
                    pts = sorted(
                        (r["clients"], r["deliveries_per_sec"])
                        for r in fan
                        if r["server"] == name and r["scenario"] == scenario and r["size"] == size
                    )
                    if pts:
                        ax.plot(*zip(*pts, strict=True), label=name, **STYLE.get(name, {}))
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xticks(ns, [f"{x:,}" for x in ns])
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
                ax.set_xlim(ns[0] / 1.6, ns[-1] * 1.6)
                ax.set_title(f"{title}, {size} B messages")
                ax.set_xlabel("clients in the room (N)")
                ax.set_ylabel("deliveries per second")
                ax.grid(True, which="major", alpha=0.3)
                if ax.lines:
                    ax.legend(fontsize=8, loc="best")
        fig.suptitle(f"Fan-out throughput, {doc['started'][:10]} (higher is better)")
        fig.tight_layout()
        path = outdir / f"{stem}-deliveries.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out["Deliveries per second against N"] = path

    panels = []
    lat = [r for r in results(doc, "latency") if r["status"] == "ok"]
    if lat:
        big = max(r["clients"] for r in lat)
        for rate in sorted({r["rate"] for r in lat}):
            panels.append((f"N={big:,}, {rate:g} msg/s", [r for r in lat if r["clients"] == big and r["rate"] == rate]))
    single = [r for r in results(doc, "single") if r["status"] == "ok" and r["size"] == 64]
    if single:
        big = max(r["clients"] for r in single)
        panels.append((f"N={big:,}, W=1 (single)", [r for r in single if r["clients"] == big]))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), squeeze=False)
        for ax, (title, rows) in zip(axes[0], panels, strict=True):
            for name in order:
                for r in rows:
                    if r["server"] == name and r.get("latency_cdf_us"):
                        qs = [q for q, _ in r["latency_cdf_us"]]
                        xs = [max(v, 1) / 1000 for _, v in r["latency_cdf_us"]]
                        style = {k: v for k, v in STYLE.get(name, {}).items() if k != "marker"}
                        label = name + (" (saturated)" if r.get("saturated") else "")
                        ax.step(xs, qs, where="post", label=label, **style)
            ax.set_xscale("log")
            ax.set_ylim(0, 1.01)
            ax.set_title(title)
            ax.set_xlabel("publish → delivery latency (ms)")
            ax.set_ylabel("fraction of deliveries")
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8, loc="upper left")
        fig.suptitle(f"Latency CDF, {doc['started'][:10]} (left is better)")
        fig.tight_layout()
        path = outdir / f"{stem}-latency.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out["Latency CDF"] = path
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(argv[0])
    doc = json.loads(src.read_text())
    pngs = plots(doc, src.parent, src.stem)
    (src.parent / f"{src.stem}.md").write_text(markdown(doc, pngs))
    print(f"written: {src.with_suffix('.md')}" + "".join(f", {p}" for p in pngs.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
