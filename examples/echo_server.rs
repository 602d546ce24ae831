//! A TCP echo server: one actor per connection.
//!
//! ```text
//! cargo run --release --example echo_server          # listens on 127.0.0.1:7878
//! cargo run --release --example echo_server -- 9000  # another port
//! nc 127.0.0.1 7878                                  # in another terminal: type lines, see them back
//! ```

use std::io::{Read, Write};

use smarm::net::{TcpListener, TcpStream};
use smarm::runtime::{self, Config};

fn handle(mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    println!("{peer} connected");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = stream.write_all(&buf[..n]) {
                    eprintln!("{peer}: write failed: {e}");
                    break;
                }
            }
            Err(e) => {
                eprintln!("{peer}: read failed: {e}");
                break;
            }
        }
    }
    println!("{peer} disconnected");
}

fn main() {
    let port: u16 = match std::env::args().nth(1) {
        None => 7878,
        Some(p) => p.parse().unwrap_or_else(|_| {
            eprintln!("usage: echo_server [PORT]   (PORT: 1-65535, default 7878)");
            std::process::exit(2);
        }),
    };
    let rt = runtime::init(Config::default());
    rt.block_on(move || {
        let listener = match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            }
        };
        println!(
            "echo server listening on {}",
            listener.local_addr().expect("local address")
        );
        println!("try it:  nc 127.0.0.1 {port}   (type a line, press Enter; Ctrl-C to quit)");
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    smarm::spawn(move || handle(s));
                }
                Err(e) => eprintln!("accept failed: {e}"),
            }
        }
    });
}
