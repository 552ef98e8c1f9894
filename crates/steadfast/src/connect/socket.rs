//! Dialling one address with the socket options that bound every wait.
//!
//! # Behaviour
//! - `TCP_NODELAY` as configured (default off, like redis-rs: see `ConnectConfig::tcp_nodelay`).
//! - `TCP_USER_TIMEOUT` (Linux): unacknowledged data older than the limit kills the socket, so a
//!   host that vanished without a RST fails in seconds, not after `tcp_retries2`'s 13-15 minutes.
//! - TCP keepalive (idle, interval, count): the kernel's backstop for idle links.
//! - Paced SYNs ([`dial_paced`]): while nothing answers, a fresh connection attempt starts every
//!   `connect.syn_interval`, each living at most [`SYN_LIFETIME`]; the first to connect wins and
//!   the rest are dropped. A path that heals is noticed within one interval, instead of at the
//!   kernel's next SYN retransmission (1 s, 3 s, 7 s ... after the first).

use std::io;
use std::net::SocketAddr;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::config::ConnectConfig;

/// Opens a TCP connection to `address` with every option set before the SYN is sent.
pub(crate) async fn dial(address: SocketAddr, config: &ConnectConfig) -> io::Result<TcpStream> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    configure(&SockRef::from(&socket), config)?;
    socket.connect(address).await
}

/// How long one unanswered SYN is waited for before its socket is dropped: the kernel's first
/// retransmission would come at 1 s, and by then a fresher SYN is already out.
pub(crate) const SYN_LIFETIME: Duration = Duration::from_secs(1);

/// Dials `address` for at most `limit`, starting a fresh attempt every `config.syn_interval`
/// while none has answered. A refusal ends it at once: the host answered.
pub(crate) async fn dial_paced(
    address: SocketAddr,
    config: &ConnectConfig,
    limit: Duration,
) -> io::Result<TcpStream> {
    let deadline = Instant::now() + limit;
    let mut pending = FuturesUnordered::new();
    let mut next_start = Instant::now();
    let mut last_error = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(last_error.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {limit:?}"),
                )
            }));
        }
        if now >= next_start {
            let lifetime = SYN_LIFETIME.min(deadline - now);
            pending.push(tokio::time::timeout(lifetime, dial(address, config)));
            next_start = now + config.syn_interval;
        }
        tokio::select! {
            Some(outcome) = pending.next() => match outcome {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(e),
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {}
            },
            () = tokio::time::sleep_until(next_start.min(deadline)) => {}
        }
    }
}

fn configure(socket: &SockRef<'_>, config: &ConnectConfig) -> io::Result<()> {
    socket.set_tcp_nodelay(config.tcp_nodelay)?;
    let keepalive = TcpKeepalive::new()
        .with_time(config.keepalive_idle)
        .with_interval(config.keepalive_interval)
        .with_retries(config.keepalive_count);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(config.tcp_user_timeout))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paced_dial_to_a_closed_port_fails_at_once_as_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let started = Instant::now();
        let err = dial_paced(address, &ConnectConfig::default(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn dialled_socket_carries_nodelay_keepalive_and_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = ConnectConfig::default();
        let stream = dial(listener.local_addr().unwrap(), &config).await.unwrap();
        assert!(
            !SockRef::from(&stream).tcp_nodelay().unwrap(),
            "off by default"
        );
        config.tcp_nodelay = true;
        let stream = dial(listener.local_addr().unwrap(), &config).await.unwrap();
        let sock = SockRef::from(&stream);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(15));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        #[cfg(target_os = "linux")]
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(5))
        );
    }
}
