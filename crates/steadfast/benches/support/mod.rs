//! Shared by the benches. A redis-server for one benchmark run: on a private loopback address (no port race), killed on
//! drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) struct Server {
    child: Child,
    /// `redis://<address>:6379`.
    pub(crate) url: String,
}

impl Server {
    /// Starts redis-server on `127.<octet>.x.y:6379` with `extra` arguments, and waits (at most
    /// 5 s) until it accepts a connection.
    pub(crate) fn start(runtime: &tokio::runtime::Runtime, octet: u8, extra: &[&str]) -> Self {
        let pid = std::process::id();
        let ip = format!("127.{octet}.{}.{}", (pid / 250) % 250, pid % 250 + 2);
        let child = Command::new("redis-server")
            .args([
                "--bind",
                &ip,
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = Self {
            child,
            url: format!("redis://{ip}:6379"),
        };
        let client = redis::Client::open(server.url.as_str()).unwrap();
        runtime.block_on(async {
            for _ in 0..500 {
                if client.get_multiplexed_async_connection().await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("redis-server at {} did not start within 5 s", server.url);
        });
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
