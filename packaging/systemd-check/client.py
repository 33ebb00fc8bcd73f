"""For run.sh: one message to the service at mx2.example.net:25 over STARTTLS, the server's
certificate verified against the test CA (argv[1]). Standard library only."""

import smtplib
import ssl
import sys

ctx = ssl.create_default_context(cafile=sys.argv[1])
with smtplib.SMTP("mx2.example.net", 25, local_hostname="client.example.net", timeout=30) as s:
    s.ehlo()
    s.starttls(context=ctx)
    s.ehlo()
    print("client: TLS", s.sock.version(), s.sock.cipher()[0])
    s.sendmail(
        "sender@example.net",
        ["user@example.com"],
        b"From: sender@example.net\r\nTo: user@example.com\r\nSubject: systemd check\r\n\r\n"
        b"sent through the unit under a real systemd\r\n",
    )
    print("client: accepted")
