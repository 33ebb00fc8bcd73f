"""The route table: whole-label, case-insensitive matching; the most specific route wins."""

from __future__ import annotations

from mxbackup.config import Route, Target
from mxbackup.routes import RouteTable


def route(domain: str, **kw) -> Route:
    return Route(domain=domain, targets=(Target("127.0.0.1", 25),), **kw)


TABLE = RouteTable(
    [
        route("*.example.org"),
        route("example.com", treat_sender_as="local"),
        route("deep.example.org", treat_recipient_as="external"),
        route("*.sub.example.org"),
    ]
)


def test_exact_domain_matches_only_itself():
    assert TABLE.lookup("example.com").domain == "example.com"
    assert TABLE.lookup("sub.example.com") is None
    assert TABLE.lookup("xexample.com") is None
    assert TABLE.lookup("example.com.evil.test") is None


def test_wildcard_matches_subdomains_not_the_apex():
    assert TABLE.lookup("a.example.org").domain == "*.example.org"
    assert TABLE.lookup("a.b.c.example.org").domain == "*.example.org"
    assert TABLE.lookup("example.org") is None
    assert TABLE.lookup("badexample.org") is None


def test_most_specific_route_wins_whatever_the_order():
    assert TABLE.lookup("deep.example.org").domain == "deep.example.org"
    assert TABLE.lookup("x.sub.example.org").domain == "*.sub.example.org"
    assert TABLE.lookup("sub.example.org").domain == "*.example.org"  # apex of *.sub


def test_lookup_ignores_case():
    assert TABLE.lookup("EXAMPLE.Com").domain == "example.com"
    assert TABLE.lookup("A.Example.ORG").domain == "*.example.org"


def test_sender_kind():
    assert TABLE.sender_kind(None) == "external"  # the null sender
    assert TABLE.sender_kind("example.com") == "local"
    assert TABLE.sender_kind("a.example.org") == "external"  # the route's default
    assert TABLE.sender_kind("elsewhere.test") == "external"


def test_len_counts_routes():
    assert len(TABLE) == 4
    assert len(RouteTable([])) == 0


def test_one_table_per_configuration_shared_by_both_sides():
    """The route table was built twice (SMTP side and scheduler): now once per config."""
    from mxbackup import config as config_module
    from mxbackup.routes import table_for

    def config():
        return config_module.parse(
            {
                "server": {"hostname": "mx.test", "listen": ["tcp:0"], "spool": "spool"},
                "routes": [{"domain": "example.com", "target_host": "127.0.0.1"}],
            },
            "test.yaml",
        )

    first, reloaded = config(), config()
    assert table_for(first) is table_for(first)
    assert table_for(reloaded) is not table_for(first)
    assert table_for(reloaded).lookup("example.com").domain == "example.com"


def test_u_label_and_a_label_are_one_route_both_ways():
    """The configuration's names are A-labels (IDNA 2008); a U-label from the wire or the
    queue is looked up in that form, in any case."""
    table = RouteTable([route("xn--bcher-kva.example"), route("*.xn--strae-oqa.example")])
    for name in (
        "bücher.example",
        "BÜCHER.example",
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.example",
    ):
        found = table.lookup(name)
        assert found is not None and found.domain == "xn--bcher-kva.example"
    assert table.lookup("a.straße.example") is not None
    assert table.lookup("a.strasse.example") is None  # IDNA 2003's mapping is another name
    assert table.lookup("bu\u0308cher.example") is None  # not a valid U-label (not NFC)
    assert table.sender_kind("bücher.example") == "external"
