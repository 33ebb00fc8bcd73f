"""The composition root: builds the service tree from a loaded configuration.

The only module (with ``tap.py``) that receives the reactor; it injects the clock and the
thread pool into the stages.
"""

from __future__ import annotations

import functools
import gc
import os
import signal
import time
from typing import Any

from twisted.application import internet, service
from twisted.internet import defer
from twisted.logger import ILogObserver, Logger, globalLogPublisher

from mxbackup import config as config_module
from mxbackup import heap
from mxbackup.check_wiring import make_check_env, make_password_check, make_resolver
from mxbackup.config import Config, ConfigError
from mxbackup.inbound.factory import SMTPFactory
from mxbackup.inbound.passwords import Passwords
from mxbackup.listening import Listener, all_settled
from mxbackup.ops.control import Commands, ControlEndpoint, ControlFactory, prepare_socket_path
from mxbackup.ops.monitoring import add_monitoring
from mxbackup.ops.verifycmd import verify_commands
from mxbackup.outbound.admin import QueueAdmin
from mxbackup.outbound.nexthop import NextHop
from mxbackup.outbound.scheduler import Scheduler
from mxbackup.preflight import endpoint as preflight_endpoint
from mxbackup.preflight import preflight
from mxbackup.queue.background import BackgroundLoad
from mxbackup.queue.prefetchproc import Prefetcher
from mxbackup.queue.recovery import readers
from mxbackup.queue.recoverysteps import Recovery
from mxbackup.queue.snapshot import SNAPSHOT_FROM
from mxbackup.queue.spool import Spool
from mxbackup.queue.spoolproc import SpoolProcess
from mxbackup.rcpt_wiring import make_rcpt_services
from mxbackup.stats import Stats
from mxbackup.wire import client, reach

log = Logger(namespace="mxbackup.service")


class MXBackupService(service.MultiService):
    """Holds the parts an operator (and later the manhole and control socket) may inspect."""

    def setServiceParent(self, parent: Any) -> None:
        """Twistd makes the application our parent before it starts logging; a
        ``log_observer`` becomes the application's ``ILogObserver``, which twistd uses when no
        ``--logger`` was given."""
        super().setServiceParent(parent)
        if self.log_observer is not None:
            parent.setComponent(ILogObserver, self.log_observer)

    def __init__(
        self,
        config: Config,
        spool: Spool,
        factory: SMTPFactory,
        scheduler: Scheduler,
        stats: Stats,
        spool_process: SpoolProcess | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        self.log_observer: Any = None  # given to the parent application (``tap``)
        self.config = config
        self.started_config = config  # what the listeners, spool... were built from
        self.spool = spool
        self.smtp_factory = factory
        self.scheduler = scheduler
        self.stats = stats
        # What an operator finds at the manhole's prompt: the live objects (kept current
        # across reloads).
        self.namespace: dict[str, Any] = {
            "config": config,
            "spool": spool,
            "scheduler": scheduler,
            "stats": stats,
            "smtp_factory": factory,
            "service": self,
        }
        self.spool_process = spool_process  # stopped last (see stopService)
        self.listeners: list[Listener] = []  # every listening endpoint (see listen())
        self._reactor = reactor
        if reactor is not None:  # the C heap's free pages given back now and then
            heap.trimming(reactor).setServiceParent(self)
        self.passwords: Passwords | None = None  # the AUTH check, given the new accounts
        self.background_load: BackgroundLoad | None = None  # a big queue read while accepting

    def load_in_background(self, recovery: Recovery, workers: int) -> None:
        """A big queue is read while the server accepts mail (``queue.background``)."""
        load = BackgroundLoad(
            self._reactor,
            recovery,
            self.scheduler.load_chunk,
            self._queue_loaded,
            workers,
            gave_up=self._queue_load_stopped,
            trim=heap.give_back,
        )
        self.background_load = load
        self.scheduler.load_progress = load.progress
        self.scheduler.loading()
        load.setServiceParent(self)

    def _loading(self) -> dict[str, Any] | None:
        """How far a big queue's load in the background is; None: not loading."""
        load = self.background_load
        return load.progress() if load is not None else None

    def _queue_loaded(self) -> None:
        """The load is complete: what it built is frozen, as at start-up (full collections
        traversed it: 65-112 ms each at 700,000 queued, 8-20 ms since; the same bounded
        leak of what lives now), and the C heap's free pages go back."""
        self._queue_load_stopped()
        gc.collect()
        gc.freeze()
        heap.give_back()

    def _queue_load_stopped(self) -> None:
        """The load ended (or gave up: what it read is queued, as after a complete one)."""
        self.scheduler.loading(False)
        self.spool.try_log.carried = {}

    def listen(self, endpoint: Any, factory: Any, what: str, on_bound: Any = None) -> None:
        """Listen on ``endpoint`` while the service runs; ``what`` names it in errors."""
        listener = Listener(endpoint, what, on_bound)
        self.listeners.append(listener)
        internet.StreamServerEndpointService(listener, factory).setServiceParent(self)

    def watch(self, listening: Any, what: str) -> None:
        """A listening service built elsewhere (``strports.service``), wrapped as ``listen``."""
        listening.endpoint = Listener(listening.endpoint, what)
        self.listeners.append(listening.endpoint)

    def privilegedStartService(self) -> None:
        """Binding happens here (before twistd drops privileges).  A listener that cannot
        bind stops the server at once: one line each, exit status 1 (systemd restarts it)."""
        super().privilegedStartService()
        failed = [listener for listener in self.listeners if listener.error]
        if failed:
            for listener in failed:
                line = f"mxbackup: {self.config.source}: {listener.what}: {listener.error}"
                log.critical("{line}", line=line)
                # fd 2 itself: twistd has pointed sys.stderr at its log by now
                os.write(2, (line + "\n").encode("utf-8", "replace"))
            raise SystemExit(1)

    def startService(self) -> None:
        # Everything that exists now (modules, classes, the recovered queue) lives as long as
        # the server: keep it out of the cyclic GC's full collections, whose pause grows with
        # everything tracked (measured: a 38 ms pause, the p99 of time-to-250 at c=50, mostly
        # Twisted's own objects).  Frozen objects are still freed by reference counting; one
        # that later ends up in a garbage cycle (a recovered envelope, a config replaced by a
        # reload) is never collected, a leak bounded by what existed at start-up.
        gc.collect()  # what is garbage now is freed first, not frozen for ever
        gc.freeze()
        super().startService()  # the children: the heap's first trim comes after the collection
        self.scheduler.start()
        self._install_sighup()
        all_settled(self.listeners).addCallback(self._all_listening)

    def _all_listening(self, failed: list[Listener]) -> None:
        """ "ready" once every listener is bound; one that failed late (an endpoint that binds
        asynchronously) stops the server with exit status 1."""
        if failed:
            for listener in failed:
                log.critical(
                    "{source}: {what}: {error}; stopping",
                    source=self.config.source,
                    what=listener.what,
                    error=listener.error,
                )
            if self._reactor is not None:
                self._reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
                self._reactor.stop()
            return
        loading = self._loading()
        log.info(
            "mxbackup ready: {routes} routes, {queued} messages in the queue{more}, spool {spool}",
            routes=len(self.config.routes),
            queued=len(self.scheduler.queue),
            more=f" ({loading['of'] - loading['loaded']} more being read)" if loading else "",
            spool=self.spool.root,
        )

    def _install_sighup(self) -> None:
        reactor = self._reactor
        if reactor is None:  # built without one (tests): the global reactor
            from twisted.internet import reactor

        def on_sighup(signum: int, frame: Any) -> None:
            reactor.callFromThread(self._reload_logged)

        signal.signal(signal.SIGHUP, on_sighup)

    def _reload_logged(self) -> None:
        try:
            self.reload()
        except ValueError as e:
            log.error("reload refused, the old configuration stays: {e}", e=str(e))

    def reload(self) -> dict[str, Any]:
        """Re-read the configuration and address-list files; apply them without dropping
        connections or queue state.  A bad new configuration is refused (ValueError with
        its error lines) and the old one stays."""
        try:
            new = config_module.load(self.config.source)
        except ConfigError as e:
            raise ValueError("\n".join(e.errors)) from None
        checked = preflight(new)  # what the server checked at start, checked again
        if checked.errors:
            raise ValueError("\n".join(checked.errors))
        for warning in checked.warnings:
            log.warn("warning: {warning}", warning=warning)
        # Against what the server started with (what runs), not the last reload: a value
        # changed and then restored needs no restart.
        running = self.started_config
        restart_needed = [
            f"server.{key}"
            for key in ("listen", "spool", "tls", "control_socket", "spool_sync", "state_store")
            if getattr(new.server, key) != getattr(running.server, key)
        ] + [key for key in ("manhole", "metrics") if getattr(new, key) != getattr(running, key)]
        self.smtp_factory.reconfigure(new)
        if self.passwords is not None:
            self.passwords.reconfigure(new.accounts)
        self.scheduler.reconfigure(new)
        self.config = new
        self.namespace["config"] = new
        log.info(
            "configuration reloaded from {source}: {routes} routes",
            source=new.source,
            routes=len(new.routes),
        )
        if restart_needed:
            log.warn(
                "reload: changes to {keys} take effect after a restart",
                keys=", ".join(restart_needed),
            )
        return {"routes": len(new.routes), "restart_needed_for": restart_needed}

    def stopService(self) -> Any:
        """No new deliveries, listeners closed, then the spool process finishes the rounds
        it was sent (outcomes being recorded) before the reactor lets go of its pipes."""
        counts = self.scheduler.stop(self._snapshot_due())  # counts kept in memory
        stopped = defer.maybeDeferred(super().stopService)
        stopped.addCallback(lambda _: counts)
        if self.spool_process is not None:
            spool_process = self.spool_process
            stopped.addCallback(lambda _: spool_process.shutdown())
        stopped.addCallback(lambda _: self._write_snapshot())  # not after a failed stop
        return stopped

    def _snapshot_due(self) -> bool:
        """Whether a stop now writes the snapshot: a queue read whole, big or started from
        one (whose try counts are in memory only: ``Recorder.save_counts``)."""
        big = len(self.scheduler.queue) >= SNAPSHOT_FROM or self.spool.from_snapshot
        return big and self._loading() is None

    def _write_snapshot(self) -> None:
        """A big queue's envelopes for the next start-up (``queue.snapshot``), once no round
        runs any more; failing to write it never fails the stop."""
        queue = self.scheduler.queue
        if not (self._snapshot_due() or self.scheduler.recorder.left_to_snapshot):
            if self._loading() is not None:  # the last one stays, still valid
                log.info("stop: no snapshot of the queue: it was still being read")
            return
        started = time.monotonic()  # a duration for the log, not a schedule
        try:
            keep_free = self.config.server.min_free_space
            count = self.spool.write_snapshot(queue.packed_items(), keep_free)
        except OSError as e:
            log.warn("stop: no snapshot of the queue ({error}): the next start reads every "
                     "envelope file", error=e)  # fmt: skip
            if left := self.scheduler.recorder.left_to_snapshot:
                log.warn("stop: the try counts of {n} messages, kept in memory for the "
                         "snapshot, are lost (one retry more for each try since their last "
                         "write, never mail)", n=left)  # fmt: skip
            return
        log.info("stop: snapshot of {count} of {n} envelopes written in {seconds:.1f} s",
                 count=count, n=len(queue), seconds=time.monotonic() - started)  # fmt: skip


def make_service(config: Config, reactor: Any) -> MXBackupService:
    """Recover the spool, then build the listeners.  Raises ConfigError for anything that
    makes the configuration unusable, before anything listens."""
    checked = preflight(config)  # what check-config checks too
    if checked.errors:
        raise ConfigError(checked.errors)
    for warning in checked.warnings:
        log.warn("warning: {warning}", warning=warning)
    spool_process = SpoolProcess(reactor)
    try:
        spool = Spool(
            config.server.spool,
            runner=spool_process,
            clock=reactor.seconds,
            sync=config.server.spool_sync,
        )
    except ValueError as e:
        raise ConfigError([f"{config.source}: server.spool_sync: {e}"]) from None
    try:
        spool.open()
    except OSError as e:
        raise _unusable(config, spool, e) from None
    stats = Stats()
    resolver = make_resolver(config, reactor)
    nexthop = NextHop(resolver, config.server.hostname, clock=reactor.seconds)
    scheduler = Scheduler(
        config,
        spool,
        clock=reactor,
        nexthop=nexthop,
        deliver=functools.partial(client.deliver, reactor),
        stats=stats,
        check=functools.partial(reach.reachable, reactor),
        prefetcher=(prefetcher := Prefetcher(reactor)),
    )
    try:
        recovery = _load_queue(spool, scheduler)
    except OSError as e:
        raise _unusable(config, spool, e) from None
    rcpt, state_service = make_rcpt_services(config, reactor, scheduler, nexthop, stats)
    passwords = make_password_check(reactor, config)
    factory = SMTPFactory(
        config,
        spool,
        clock=reactor,
        check_password=passwords,
        tls_context=checked.tls_context,
        wakeup=scheduler.wakeup,
        stats=stats,
        etrn=scheduler,
        seen=scheduler.quick.seen,
        rcpt=rcpt,
        checks=make_check_env(config, reactor, resolver, stats, state_service.store),
    )
    top = MXBackupService(config, spool, factory, scheduler, stats, spool_process, reactor)
    state_service.setServiceParent(top)
    if recovery is not None:
        top.load_in_background(recovery, readers())
    top.namespace["state_store"] = state_service.store
    top.passwords = passwords
    for i, description in enumerate(config.server.listen):
        try:
            endpoint = preflight_endpoint(reactor, description)
        except ValueError as e:  # a systemd socket that was not passed to us
            raise ConfigError([f"{config.source}: server.listen[{i}]: {e}"]) from None
        top.listen(
            endpoint,
            factory,
            f"server.listen[{i}]: cannot listen on {description!r}",
            on_bound=lambda port: _own_address(port, nexthop),
        )
    admin = QueueAdmin(scheduler)
    top.namespace["admin"] = admin
    commands = Commands(scheduler, admin, spool, top.reload)
    commands.extra.update(verify_commands(state_service.cache))
    socket_path = config.control_socket
    prepare_socket_path(socket_path)
    top.listen(
        ControlEndpoint(reactor, socket_path),
        ControlFactory(commands, globalLogPublisher),
        f"server.control_socket: cannot listen on {socket_path!r}",
    )
    add_monitoring(config, top, reactor)
    reactor.callWhenRunning(spool_process.start)
    reactor.callWhenRunning(prefetcher.start)
    log.info(
        "mxbackup starting: {routes} routes, {queued} messages in the queue{how}, spool {spool}",
        routes=len(config.routes),
        queued=len(scheduler.queue) + (recovery.count if recovery is not None else 0),
        how=" (read while accepting mail)" if recovery is not None else "",
        spool=spool.root,
    )
    return top


def _load_queue(spool: Spool, scheduler: Scheduler) -> Recovery | None:
    """The queue, read now (packed as they are read: a million fit); a big one is left to be
    read while the server accepts mail (``queue.recoverysteps``): its recovery is returned."""
    recovery = spool.begin_recovery()
    if not recovery.in_background():
        scheduler.load(recovery.read_here())
        recovery.finish()
        return None
    recovery.pin()  # before any round runs
    spool.try_log.carried = recovery.logged  # its lines of messages not read yet stay
    return recovery


def _own_address(port: Any, nexthop: NextHop) -> None:
    """A bound SMTP listener's address is ours: nexthop never delivers there."""
    host = port.getHost()
    if hasattr(host, "port"):
        nexthop.add_own(host.host, host.port)


def _unusable(config: Config, spool: Spool, error: OSError) -> ConfigError:
    return ConfigError([f"{config.source}: server.spool: cannot use {spool.root}: {error}"])
