"""For run.sh: can pyOpenSSL install its callbacks (cffi ``ffi.callback``) in this sandbox?
Twisted's verified client TLS uses set_info_callback; SNI (a second certificate) uses the
servername callback. Prints ``name ok`` or ``name FAILED: ...`` for each; exit 1 if any failed."""

import sys

from OpenSSL import SSL

ctx = SSL.Context(SSL.TLS_METHOD)
failed = False
for name, install in [
    ("set_info_callback", lambda: ctx.set_info_callback(lambda c, w, r: None)),
    ("set_verify", lambda: ctx.set_verify(SSL.VERIFY_PEER, lambda *a: True)),
    ("set_tlsext_servername_callback", lambda: ctx.set_tlsext_servername_callback(lambda c: None)),
]:
    try:
        install()
        print(name, "ok")
    except MemoryError as e:
        print(name, "FAILED:", e)
        failed = True
sys.exit(1 if failed else 0)
