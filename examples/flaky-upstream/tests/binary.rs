//! The program itself, over real loopback sockets: each `--listen` is an upstream of its own.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Kills the program when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One GET over a fresh connection: the status line.
fn status_line(addr: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: flaky\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn every_listen_address_answers() {
    let child = Command::new(env!("CARGO_BIN_EXE_flaky-upstream"))
        .args(["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .args(["--worker-threads", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let mut lines = BufReader::new(running.0.stdout.take().unwrap()).lines();
    let addrs: Vec<String> = (0..2)
        .map(|_| {
            let line = lines.next().unwrap().unwrap();
            line.strip_prefix("listening on http://")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .to_owned()
        })
        .collect();
    assert_ne!(addrs[0], addrs[1]);
    for addr in &addrs {
        assert_eq!(status_line(addr), "HTTP/1.1 200 OK", "{addr}");
    }
}
