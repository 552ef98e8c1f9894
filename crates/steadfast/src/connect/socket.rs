//! Dialling one address with the socket options that bound every wait.
//!
//! # Behaviour
//! - `TCP_NODELAY` on: commands are small and latency-bound.
//! - `TCP_USER_TIMEOUT` (Linux): unacknowledged data older than the limit kills the socket, so a
//!   host that vanished without a RST fails in seconds, not after `tcp_retries2`'s 13-15 minutes.
//! - TCP keepalive (idle, interval, count): the kernel's backstop for idle links.

use std::io;
use std::net::SocketAddr;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

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

fn configure(socket: &SockRef<'_>, config: &ConnectConfig) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
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
    use std::time::Duration;

    #[tokio::test]
    async fn dialled_socket_carries_nodelay_keepalive_and_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = ConnectConfig::default();
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
