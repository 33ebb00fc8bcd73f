"""Inbound: the SMTP server and everything that decides what it accepts (addresses, access,
the RCPT decision chain, the DATA stream).  It hands accepted mail to ``mxbackup.queue`` and
knows nothing of delivery."""
