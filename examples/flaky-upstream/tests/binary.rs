//! The program itself, over real loopback sockets: each `--listen` is an upstream of its own.

mod common;

use common::raw_get;
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

/// Kills the program when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn every_listen_address_answers() {
    let child = Command::new(env!("CARGO_BIN_EXE_flaky-upstream"))
        .args(["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .args(["--worker-threads", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let mut lines = BufReader::new(running.0.stdout.take().unwrap()).lines();
    let addrs: Vec<SocketAddr> = (0..2)
        .map(|_| {
            let line = lines.next().unwrap().unwrap();
            line.strip_prefix("listening on http://")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .unwrap()
        })
        .collect();
    assert_ne!(addrs[0], addrs[1]);
    for addr in addrs {
        let response = String::from_utf8(raw_get(addr).await.unwrap()).unwrap();
        let status = response.lines().next().unwrap_or_default();
        assert_eq!(status, "HTTP/1.1 200 OK", "{addr}");
    }
}
