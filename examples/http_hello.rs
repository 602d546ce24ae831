//! A minimal HTTP/1.1 "hello world" server: one actor per connection,
//! keep-alive and pipelining, `Connection: close` honoured.
//!
//! ```text
//! cargo run --release --example http_hello           # 127.0.0.1:8080
//! cargo run --release --example http_hello -- 9000   # another port
//! curl -v http://127.0.0.1:8080/
//! ```

use std::io::{Read, Write};

use smarm::net::{TcpListener, TcpStream};
use smarm::runtime::{self, Config};

const BODY: &[u8] = b"Hello, world!\n";
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// What one parsed request asks for.
struct Request {
    /// Bytes of head and body.
    len: usize,
    /// The connection ends after the response.
    close: bool,
}

/// Parses the first request in `buf`: None if it is not complete yet,
/// Err if it is malformed.
fn parse(buf: &[u8]) -> Result<Option<Request>, ()> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ())?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or(())?;
    let http10 = request_line.ends_with("HTTP/1.0");
    let mut close = http10;
    let mut body = 0usize;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(())?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                close = true;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().map_err(|_| ())?;
        }
    }
    let len = head_end + 4 + body;
    Ok((buf.len() >= len).then_some(Request { len, close }))
}

fn respond(out: &mut Vec<u8>, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(BODY.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(BODY);
}

/// Serves one connection until the peer closes it or asks to.
fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        // Answer every complete request in the buffer (pipelining), in order.
        let mut start = 0;
        let mut close = false;
        loop {
            match parse(&buf[start..filled]) {
                Ok(Some(req)) => {
                    respond(&mut out, req.close);
                    start += req.len;
                    if req.close {
                        close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            s.write_all(&out)?;
            out.clear();
        }
        if close {
            return s.shutdown(std::net::Shutdown::Write);
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = s.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

fn main() {
    let port: u16 = match std::env::args().nth(1) {
        None => 8080,
        Some(p) => p.parse().unwrap_or_else(|_| {
            eprintln!("usage: http_hello [PORT]   (default 8080)");
            std::process::exit(2);
        }),
    };
    let rt = runtime::init(Config::default());
    rt.block_on(move || {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        });
        println!(
            "HTTP server on http://127.0.0.1:{port}/  (try: curl -v http://127.0.0.1:{port}/)"
        );
        for s in listener.incoming().flatten() {
            let _ = s.set_nodelay(true);
            smarm::spawn(move || {
                let _ = serve(s);
            });
        }
    });
}
