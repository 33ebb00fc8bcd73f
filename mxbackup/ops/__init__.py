"""Operating the server: the control socket and the ``mxbackup`` command, the manhole,
metrics and JSON logs."""
