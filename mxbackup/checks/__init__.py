"""Inbound filtering (``checks:``): DNSBL, SPF, DKIM, Authentication-Results, ARC, greylisting.

Below ``inbound`` (which asks these modules from its RCPT links, at MAIL and at the end of
data) and above ``config``/``state``.  Every DNS question goes through the one injected
resolver (``delivery.dns_servers``); nothing here touches the global reactor.
"""
