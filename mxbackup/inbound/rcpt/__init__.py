"""The RCPT decision chain: one module per link, each behind ``decide(transaction, recipient)``.

``decision`` holds the vocabulary (``Accept``, ``Postpone``, ``Candidate``, ``Link``), ``chain``
runs the links in order and builds the chain from the configuration.  A new check (DNSBL,
callout verification, greylisting, quota) is a new module here plus one line in
``chain.build_chain``.
"""
