"""Composition of what the inbound checks, AUTH and delivery ask the outside (called by
``service.py``): the DNS resolver, the checks' environment on it, and the password check, each
on the injected reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, threads
from twisted.names import cache as dns_cache
from twisted.names import client as dns_client
from twisted.names import hosts as dns_hosts
from twisted.names import resolve

from mxbackup.checks.env import CheckEnv
from mxbackup.config import Config
from mxbackup.inbound.passwords import Passwords
from mxbackup.stats import Stats


def make_password_check(reactor: Any, config: Config) -> Passwords:
    """The AUTH password check; bcrypt runs in the reactor's thread pool."""

    def run_in_thread(verify: Any) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), verify)

    return Passwords(config.accounts, run_in_thread)


def make_resolver(config: Config, reactor: Any) -> Any:
    """The DNS resolver for MX lookups: /etc/hosts, a cache, then the name servers, all on
    the injected reactor.  With ``delivery.dns_servers`` only those servers are asked (Twisted's
    ``createResolver`` adds /etc/resolv.conf's to any list it is given); without it, those of
    /etc/resolv.conf (re-read when it changes)."""
    servers = list(config.delivery.dns_servers)
    if servers:
        network = dns_client.Resolver(servers=servers, reactor=reactor)
    else:
        network = dns_client.Resolver(resolv=b"/etc/resolv.conf", reactor=reactor)
    return resolve.ResolverChain(
        [dns_hosts.Resolver(b"/etc/hosts"), dns_cache.CacheResolver(reactor=reactor), network]
    )


def make_check_env(
    config: Config, reactor: Any, resolver: Any, stats: Stats, store: Any = None
) -> CheckEnv:
    """What the inbound checks use: the same resolver as delivery (``delivery.dns_servers``),
    the reactor's clock, and its thread pool for DKIM/ARC's hashing and RSA."""

    def offload(fn: Any, *args: Any) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)

    return CheckEnv(resolver=resolver, clock=reactor, offload=offload, stats=stats, store=store)
