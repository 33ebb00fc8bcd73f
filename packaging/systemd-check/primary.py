"""A stand-in primary for run.sh: SMTP with STARTTLS on 127.0.0.1:2526, standard library only
(it runs with the container's /usr/bin/python3). Prints one line per message it gets:
``RECEIVED tls=True version=TLSv1.3 bytes=N``."""

import socketserver
import ssl
import sys

CTX = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
CTX.load_cert_chain(sys.argv[1], sys.argv[2])


class Session(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        sock, tls = self.request, False
        f = sock.makefile("rwb")

        def say(text: str) -> None:
            f.write(text.encode() + b"\r\n")
            f.flush()

        say("220 primary.test ESMTP")
        while line := f.readline():
            cmd = line.strip().decode(errors="replace").upper()
            if cmd.startswith(("EHLO", "HELO")):
                say("250-primary.test")
                if not tls:
                    say("250-STARTTLS")
                say("250 8BITMIME")
            elif cmd == "STARTTLS" and not tls:
                say("220 2.0.0 go ahead")
                sock = CTX.wrap_socket(sock, server_side=True)
                f, tls = sock.makefile("rwb"), True
            elif cmd.startswith(("MAIL", "RCPT", "RSET", "NOOP")):
                say("250 2.0.0 ok")
            elif cmd == "DATA":
                say("354 go ahead")
                size = 0
                while (data := f.readline()) not in (b".\r\n", b""):
                    size += len(data)
                version = sock.version() if tls else None
                print(f"RECEIVED tls={tls} version={version} bytes={size}", flush=True)
                say("250 2.0.0 queued")
            elif cmd == "QUIT":
                say("221 2.0.0 bye")
                return
            else:
                say("502 5.5.2 no")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True


Server(("127.0.0.1", 2526), Session).serve_forever()
