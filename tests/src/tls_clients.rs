//! Python TLS clients (run with Debian's `/usr/bin/python3`) for the
//! certificate renewal tests of file mode and Kubernetes mode.

/// A TLS client that keeps one connection open across a certificate
/// change: prints the certificate's subject, makes a request, waits for
/// the file `argv[4]`, then makes a second request on the same connection.
pub const KEEP_OPEN: &str = r#"
import os, socket, ssl, sys, time
host, ip, ca, flag = sys.argv[1:5]
context = ssl.create_default_context(cafile=ca)
conn = context.wrap_socket(socket.create_connection((ip, 443), timeout=5), server_hostname=host)
def get():
    conn.sendall(("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode())
    data = b""
    while not data.endswith(b"served"):
        chunk = conn.recv(4096)
        if not chunk:
            raise SystemExit("connection closed")
        data += chunk
subject = dict(x[0] for x in conn.getpeercert()["subject"])
print("held connection certificate:", subject["commonName"], flush=True)
get()
for _ in range(400):
    if os.path.exists(flag):
        break
    time.sleep(0.05)
get()
print("second request on the held connection: served", flush=True)
"#;

/// Prints the certificate a new connection gets.
pub const NEW_CONNECTION: &str = r#"
import socket, ssl, sys
host, ip, ca = sys.argv[1:4]
context = ssl.create_default_context(cafile=ca)
conn = context.wrap_socket(socket.create_connection((ip, 443), timeout=5), server_hostname=host)
print(dict(x[0] for x in conn.getpeercert()["subject"])["commonName"])
"#;
