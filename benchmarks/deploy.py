"""The servers a benchmark suite run measures: started fresh for each run on 127.0.0.1 and free
ports, pinned to the server cores, stopped after it.

A ``Deployment`` is what one run talks to: the addresses the generator connects to (one, or one
per cluster node), the pids whose CPU counts (every node and the redis-server), the wire
protocol, and the processes to stop. The starters:

* ``chatcore`` one chatcore server (optionally with its IRC front end, measured over IRC);
* ``reference`` the asyncio (or uvloop) reference server;
* ``cluster`` a redis-server (no persistence) and N chatcore nodes joined through it;
* ``ngircd`` / ``inspircd`` the Debian IRC servers, from a generated configuration with their
  flood limits raised (``ircd_available`` says whether they are installed).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
SERVER_START_SECONDS = 20
SETTLE_SECONDS = 0.2               # after start, before the idle RSS is read

# The load generator's clients all come from loopback and send far faster than a person:
# exempt them from flood control and the per-address limit (fair turns still apply).
CHATCORE_FLAGS = ("server.py", "--log-level", "WARNING", "--limit-exempt", "127.0.0.0/8,::1")


@dataclasses.dataclass
class Deployment:
    name: str
    procs: list                    # subprocess.Popen, in start order
    addrs: list                    # (host, port) per server the generator spreads clients over
    pids: list                     # processes whose CPU and RSS count
    proto: str = "native"
    generator_flags: tuple = ()    # what the load generator needs for this server

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def take_server_core():
    """The first core for the servers, the others for this process (pinned now): the
    ``cpus`` to start servers with (None on a one-core machine: nothing pinned)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    os.sched_setaffinity(0, cores[1:])
    return {cores[0]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _popen(argv, cpus, log: pathlib.Path, env=None, cwd=ROOT) -> subprocess.Popen:
    with open(log, "ab") as stderr:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus
                                else None)


def _started(procs, log: pathlib.Path, what: str, ready) -> None:
    """Wait until ``ready()``; on a dead process or the deadline stop everything and say why."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while not ready():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            for p in procs:
                p.kill()
                p.wait()
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start; see {log}\n{tail}")
        time.sleep(0.05)           # polling processes we do not own: no event to await


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def _port_file_ready(path: pathlib.Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


def _chatcore_node(name: str, cpus, workdir: pathlib.Path, flags=(), env=None, irc=False,
                   tree=ROOT):
    """(process, native port, IRC port or None); a cluster node writes its port file only
    after it has joined the cluster. ``tree``: the source tree whose server.py runs (an A/B
    of two commits; its extensions built in place)."""
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    irc_port = free_port() if irc else None
    argv = [PY, *CHATCORE_FLAGS, "--port", "0", "--port-file", str(port_file), *flags]
    if irc:
        argv += ["--irc-port", str(irc_port)]
    log = workdir / f"{name}.log"
    proc = _popen(argv, cpus, log, env=dict(os.environ, **(env or {})), cwd=tree)
    _started([proc], log, name, lambda: _port_file_ready(port_file)
             and (irc_port is None or _accepts(irc_port)))
    return proc, int(port_file.read_text()), irc_port


def start_chatcore(name, cpus, workdir, flags=(), env=None, proto="native") -> Deployment:
    proc, port, irc_port = _chatcore_node(name, cpus, workdir, flags, env, irc=proto == "irc")
    time.sleep(SETTLE_SECONDS)
    return Deployment(name, [proc], [("127.0.0.1", irc_port if proto == "irc" else port)],
                      [proc.pid], proto)


def start_reference(name, cpus, workdir, flags=()) -> Deployment:
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log = workdir / f"{name}.log"
    proc = _popen([PY, "-m", "benchmarks.reference", *flags, "--port", "0", "--port-file",
                   str(port_file)], cpus, log)
    _started([proc], log, name, lambda: _port_file_ready(port_file))
    time.sleep(SETTLE_SECONDS)
    return Deployment(name, [proc], [("127.0.0.1", int(port_file.read_text()))], [proc.pid])


def start_redis(cpus, workdir: pathlib.Path, unix: bool = False) -> tuple:
    """A redis-server on a free loopback port without persistence: (process, URL); with
    ``unix`` the URL is its Unix socket in ``workdir`` (a Redis on the nodes' machine)."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    log = workdir / "redis.log"
    socket_path = workdir / f"redis-{port}.sock"
    proc = _popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                   *(("--unixsocket", str(socket_path), "--unixsocketperm", "700")
                     if unix else ())], cpus, log)
    _started([proc], log, "redis-server", lambda: _accepts(port)
             and (not unix or socket_path.exists()))
    return proc, f"unix://{socket_path}" if unix else f"redis://127.0.0.1:{port}/0"


def start_cluster(name, cpus, workdir, nodes=2, flags=(), env=None, tree=ROOT,
                  redis_unix=False) -> Deployment:
    """redis-server and ``nodes`` chatcore nodes on it (from source ``tree``; over its Unix
    socket with ``redis_unix``); clients are spread over the nodes."""
    redis, url = start_redis(cpus, workdir, unix=redis_unix)
    procs, addrs = [redis], []
    try:
        for k in range(nodes):
            proc, port, _ = _chatcore_node(f"{name}-node{k}", cpus, workdir,
                                           ("--redis", url, "--server-name", f"node{k}",
                                            *flags), env, tree=tree)
            procs.append(proc)
            addrs.append(("127.0.0.1", port))
    except RuntimeError:
        Deployment(name, procs, [], []).stop()
        raise
    time.sleep(SETTLE_SECONDS)
    # nodes first, redis last: the order the CPU breakdown is reported in
    return Deployment(name, procs, addrs, [p.pid for p in procs[1:]] + [redis.pid])


# -- IRC servers -----------------------------------------------------------------------------

NGIRCD = shutil.which("ngircd") or "/usr/sbin/ngircd"
INSPIRCD = shutil.which("inspircd") or "/usr/sbin/inspircd"
BENCH_CLIENTS = 20000              # connections an IRC server must allow from 127.0.0.1


def ircd_available(name: str) -> bool:
    return os.access(NGIRCD if name == "ngircd" else INSPIRCD, os.X_OK)


def ngircd_config(port: int, workdir: pathlib.Path) -> str:
    motd = workdir / "ngircd.motd"
    motd.write_text("bench\n")
    # MaxPenaltyTime 0: no command penalties (ngIRCd's flood control) for the generator.
    return f"""[Global]
Name = bench.ngircd
Info = chatcore benchmark
Listen = 127.0.0.1
Ports = {port}
MotdFile = {motd}
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 31
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
"""


def inspircd_config(port: int, workdir: pathlib.Path) -> str:
    motd = workdir / "inspircd.motd"
    motd.write_text("bench\n")
    # The flood limits raised: no fakelag, a command rate and penalty threshold no generator
    # reaches, send and receive queues large enough for a window of 64 lines per sender.
    return f"""<server name="bench.inspircd" description="chatcore benchmark" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="bench" allow="*" timeout="60" pingfreq="600" maxchans="10000"
         hardsendq="256M" softsendq="64M" recvq="64M" threshold="1000000000"
         commandrate="1000000000" fakelag="no" localmax="{BENCH_CLIENTS}"
         globalmax="{BENCH_CLIENTS}" maxconnwarn="no" resolvehostnames="no" useident="no">
<files motd="{motd}">
<dns server="127.0.0.1" timeout="1">
<options prefixquit="Quit: " syntaxhints="no" announcets="no" hostintopic="yes">
<security hideserver="" userstats="Pu" customversion="" flatlinks="no" maxtargets="20">
<performance quietbursts="yes" softlimit="{BENCH_CLIENTS + 1000}" somaxconn="4096"
             netbuffersize="65536" clonesonconnect="no">
<limits maxnick="31" maxchan="64" maxmodes="20" maxident="11" maxquit="255" maxtopic="307"
        maxkick="255" maxreal="128" maxaway="200">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"
     target="{workdir / 'inspircd-events.log'}">
"""


def start_ircd(name: str, cpus, workdir: pathlib.Path) -> Deployment:
    if not ircd_available(name):
        raise RuntimeError(f"{name} is not installed (apt-get install {name})")
    port = free_port()
    conf = workdir / f"{name}.conf"
    log = workdir / f"{name}.log"
    if name == "ngircd":
        conf.write_text(ngircd_config(port, workdir))
        argv = [NGIRCD, "--nodaemon", "--config", str(conf)]
    else:
        conf.write_text(inspircd_config(port, workdir))
        argv = [INSPIRCD, "--nofork", "--nopid", "--config", str(conf)]
        if os.geteuid() == 0:
            argv.append("--runasroot")
    proc = _popen(argv, cpus, log, cwd=workdir)
    _started([proc], log, name, lambda: _accepts(port))
    time.sleep(SETTLE_SECONDS)
    # ngIRCd listens with a backlog of 10: 256 connects in flight overflow it and some are
    # reset; 8 at a time connect 2000 clients in about 2 s.
    flags = ("--connect-window", "8") if name == "ngircd" else ()
    return Deployment(name, [proc], [("127.0.0.1", port)], [proc.pid], "irc", flags)


def starter(kind: str, **options):
    """A ``start(name, cpus, workdir) -> Deployment`` for the suite's table of implementations."""
    return functools.partial({"chatcore": start_chatcore, "reference": start_reference,
                              "cluster": start_cluster, "ircd": start_ircd_named}[kind],
                             **options)


def start_ircd_named(name, cpus, workdir, daemon: str) -> Deployment:
    deployment = start_ircd(daemon, cpus, workdir)
    deployment.name = name
    return deployment
