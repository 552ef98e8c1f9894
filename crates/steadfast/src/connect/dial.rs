//! Dialling every address a name returned: staggered, in parallel, the first to connect wins
//! (RFC 8305, "Happy Eyeballs").
//!
//! # Behaviour
//! - **Order.** The resolver's order, with the address families interleaved (the first
//!   address's family first: a dual-stack name whose IPv6 path is broken costs one stagger, not
//!   one per IPv6 address). Addresses that failed to answer in the last [`FAILED_MEMORY`] go
//!   after the others, and so does an address the caller asked to avoid (the health probe's:
//!   the stalled link's own address).
//! - **Race.** The first address is dialled at once; each next one `connect.address_stagger`
//!   later, or as soon as every earlier attempt has failed. Earlier attempts keep running, each
//!   with its own paced SYNs ([`dial_paced`](super::socket::dial_paced)); the first connection
//!   wins and the others are dropped (their sockets close). The race is decided at the TCP
//!   connect, as RFC 8305's is: a server that accepts and then does not answer is the
//!   handshake's deadline's business.
//! - **Memory.** Every address that lost the race, or failed, is remembered as failed for
//!   [`FAILED_MEMORY`]; the winner is forgotten. Clones of a connector share the memory, so the
//!   supervisor's next dial starts with the address the health probe just reached.
//!
//! # Why a stagger and not all at once
//! Dialling every address at once doubles the SYNs a healthy endpoint gets on every connect; a
//! stagger costs nothing when the first address answers (it answers inside a region in well under
//! the stagger) and one stagger when it does not.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::socket;
use crate::config::ConnectConfig;

/// How long an address that failed to answer is tried after the others.
pub(crate) const FAILED_MEMORY: Duration = Duration::from_secs(30);

/// Most addresses remembered; the oldest are forgotten first.
const MEMORY_CAPACITY: usize = 64;

/// Addresses that recently failed to answer. Cheap to clone; clones share the record.
#[derive(Clone, Debug, Default)]
pub(crate) struct Failures(Arc<Mutex<HashMap<SocketAddr, Instant>>>);

impl Failures {
    /// `address` failed (or lost a race) at `at`.
    pub(crate) fn record(&self, address: SocketAddr, at: Instant) {
        let mut failed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|_, when| at.saturating_duration_since(*when) < FAILED_MEMORY);
        if failed.len() >= MEMORY_CAPACITY
            && let Some(oldest) = failed
                .iter()
                .min_by_key(|(_, when)| **when)
                .map(|(a, _)| *a)
        {
            failed.remove(&oldest);
        }
        failed.insert(address, at);
    }

    /// `address` connected: it is tried in the resolver's order again.
    pub(crate) fn forget(&self, address: SocketAddr) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&address);
    }

    /// [`order`] with this memory.
    pub(crate) fn order(
        &self,
        addresses: &[SocketAddr],
        avoid: Option<SocketAddr>,
    ) -> Vec<SocketAddr> {
        let now = Instant::now();
        order(addresses, avoid, |a| self.has_failed(a, now))
    }

    fn has_failed(&self, address: SocketAddr, now: Instant) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&address)
            .is_some_and(|when| now.saturating_duration_since(*when) < FAILED_MEMORY)
    }
}

/// The order to dial `addresses` in: families interleaved, then the addresses that recently
/// failed and `avoid` last (each group keeping its order).
pub(crate) fn order(
    addresses: &[SocketAddr],
    avoid: Option<SocketAddr>,
    is_failed: impl Fn(SocketAddr) -> bool,
) -> Vec<SocketAddr> {
    let mut unique: Vec<SocketAddr> = Vec::with_capacity(addresses.len());
    for address in addresses {
        if !unique.contains(address) {
            unique.push(*address);
        }
    }
    let interleaved = interleave(&unique);
    let rank = |address: &SocketAddr| {
        if Some(*address) == avoid {
            2
        } else {
            u8::from(is_failed(*address))
        }
    };
    let mut ordered = interleaved;
    // A stable sort keeps each group in the interleaved order.
    ordered.sort_by_key(rank);
    ordered
}

/// The addresses alternating between families, starting with the first address's family.
fn interleave(addresses: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addresses.first() else {
        return Vec::new();
    };
    let (mut leading, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) = addresses
        .iter()
        .partition(|a| a.is_ipv4() == first.is_ipv4());
    let mut out = Vec::with_capacity(addresses.len());
    leading.reverse();
    other.reverse();
    loop {
        match (leading.pop(), other.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Why a race found no connection.
#[derive(Debug)]
pub(crate) struct Lost {
    /// One line per address tried.
    pub(crate) errors: Vec<String>,
    /// Every address tried refused the connection (nothing listens: a restart).
    pub(crate) is_refused: bool,
}

/// Dials `addresses` (already in [`order`]) until one connects or `deadline`, starting the next
/// one `config.address_stagger` after the previous, or at once when every attempt so far failed.
/// Records the losers in `failures` and forgets the winner.
pub(crate) async fn race(
    addresses: &[SocketAddr],
    config: &ConnectConfig,
    deadline: Instant,
    failures: &Failures,
) -> Result<(TcpStream, SocketAddr), Lost> {
    let mut pending = FuturesUnordered::new();
    let mut next = addresses.iter().copied();
    let mut errors = Vec::new();
    let mut is_refused = true;
    let mut next_start = Instant::now();
    let mut tried = Vec::new();
    let outcome = loop {
        let now = Instant::now();
        if now >= next_start
            && now < deadline
            && let Some(address) = next.next()
        {
            tried.push(address);
            let limit = deadline.saturating_duration_since(now);
            pending
                .push(async move { (address, socket::dial_paced(address, config, limit).await) });
            next_start = now + config.address_stagger;
        }
        let is_more = tried.len() < addresses.len() && now < deadline;
        if pending.is_empty() {
            if is_more {
                next_start = now;
                continue;
            }
            break None;
        }
        let stagger = tokio::time::sleep_until(next_start);
        tokio::select! {
            Some((address, result)) = pending.next() => match result {
                Ok(stream) => break Some((stream, address)),
                Err(e) => {
                    is_refused &= e.kind() == io::ErrorKind::ConnectionRefused;
                    errors.push(format!("tcp connect to {address}: {e}"));
                    failures.record(address, Instant::now());
                    if pending.is_empty() {
                        next_start = Instant::now();
                    }
                }
            },
            () = stagger, if is_more => {}
        }
    };
    drop(pending);
    let now = Instant::now();
    match outcome {
        Some((stream, winner)) => {
            for address in tried.into_iter().filter(|a| *a != winner) {
                failures.record(address, now);
            }
            failures.forget(winner);
            Ok((stream, winner))
        }
        None => {
            if errors.is_empty() {
                errors.push("no address to dial".to_owned());
                is_refused = false;
            }
            Err(Lost { errors, is_refused })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 6379))
    }

    fn v6(last: u16) -> SocketAddr {
        SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, last], 6379))
    }

    #[test]
    fn the_resolvers_order_is_kept_when_nothing_failed() {
        let addresses = [v4(1), v4(2), v4(3)];
        assert_eq!(order(&addresses, None, |_| false), addresses.to_vec());
    }

    #[test]
    fn families_alternate_starting_with_the_first_addresss_family() {
        let addresses = [v6(1), v6(2), v6(3), v4(1), v4(2)];
        assert_eq!(
            order(&addresses, None, |_| false),
            vec![v6(1), v4(1), v6(2), v4(2), v6(3)]
        );
    }

    #[test]
    fn an_address_that_failed_recently_is_tried_after_the_others() {
        let addresses = [v4(1), v4(2), v4(3)];
        assert_eq!(
            order(&addresses, None, |a| a == v4(1)),
            vec![v4(2), v4(3), v4(1)]
        );
    }

    #[test]
    fn the_address_to_avoid_goes_last_even_after_failed_ones() {
        let addresses = [v4(1), v4(2), v4(3)];
        assert_eq!(
            order(&addresses, Some(v4(2)), |a| a == v4(1)),
            vec![v4(3), v4(1), v4(2)]
        );
    }

    #[test]
    fn the_memory_forgets_an_address_that_connected_and_one_older_than_its_span() {
        let failures = Failures::default();
        let now = Instant::now();
        failures.record(v4(1), now);
        failures.record(v4(2), now);
        failures.forget(v4(2));
        assert!(failures.has_failed(v4(1), now));
        assert!(!failures.has_failed(v4(2), now));
        assert!(!failures.has_failed(v4(1), now + FAILED_MEMORY));
    }

    #[test]
    fn the_memory_holds_a_bounded_number_of_addresses() {
        let failures = Failures::default();
        let now = Instant::now();
        for i in 0..200u16 {
            failures.record(v6(i), now + Duration::from_millis(u64::from(i)));
        }
        let held = failures.0.lock().unwrap().len();
        assert_eq!(held, MEMORY_CAPACITY);
        assert!(failures.has_failed(v6(199), now + Duration::from_millis(199)));
    }

    proptest! {
        #[test]
        fn the_order_is_a_permutation_of_the_distinct_addresses(
            picks in proptest::collection::vec((any::<bool>(), 0u8..6, any::<bool>()), 0..12),
            avoid in proptest::option::of(0u8..6),
        ) {
            let addresses: Vec<SocketAddr> = picks
                .iter()
                .map(|(is_v6, n, _)| if *is_v6 { v6(u16::from(*n)) } else { v4(*n) })
                .collect();
            let failed: Vec<SocketAddr> = picks
                .iter()
                .zip(&addresses)
                .filter(|((_, _, f), _)| *f)
                .map(|(_, a)| *a)
                .collect();
            let avoid = avoid.map(v4);
            let ordered = order(&addresses, avoid, |a| failed.contains(&a));
            let mut distinct = addresses.clone();
            distinct.sort();
            distinct.dedup();
            let mut sorted = ordered.clone();
            sorted.sort();
            prop_assert_eq!(sorted, distinct);
            // Nothing that failed comes before something that did not (the avoided one aside).
            let rank = |a: &SocketAddr| if Some(*a) == avoid { 2 } else { u8::from(failed.contains(a)) };
            prop_assert!(ordered.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
        }
    }

    /// A listener whose accept queue is full: the kernel drops further SYNs unanswered, a dead
    /// address on loopback.
    async fn unanswering() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(0).unwrap();
        let address = socket.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let filler = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .unwrap();
            filler.set_nonblocking(true).unwrap();
            let _ = filler.connect(&address.into());
            fillers.push(std::net::TcpStream::from(filler));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        (socket, fillers, address)
    }

    #[tokio::test]
    async fn a_dead_first_address_costs_one_stagger_and_is_remembered() {
        let (_dead, _fillers, dead) = unanswering().await;
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_address = live.local_addr().unwrap();
        let config = ConnectConfig::default();
        let failures = Failures::default();
        let started = Instant::now();
        let (_stream, winner) = race(
            &failures.order(&[dead, live_address], None),
            &config,
            started + Duration::from_secs(5),
            &failures,
        )
        .await
        .unwrap();
        let took = started.elapsed();
        assert_eq!(winner, live_address);
        assert!(took >= config.address_stagger, "{took:?}");
        assert!(took < config.address_stagger * 3, "{took:?}");
        assert_eq!(
            failures.order(&[dead, live_address], None),
            vec![live_address, dead],
            "the dead address goes last next time"
        );
    }

    #[tokio::test]
    async fn a_refused_first_address_starts_the_next_at_once() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_address = closed.local_addr().unwrap();
        drop(closed);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_address = live.local_addr().unwrap();
        let started = Instant::now();
        let (_stream, winner) = race(
            &[closed_address, live_address],
            &ConnectConfig::default(),
            started + Duration::from_secs(5),
            &Failures::default(),
        )
        .await
        .unwrap();
        assert_eq!(winner, live_address);
        assert!(started.elapsed() < ConnectConfig::default().address_stagger);
    }

    #[tokio::test]
    async fn every_address_refusing_is_reported_as_refused() {
        let mut addresses = Vec::new();
        for _ in 0..2 {
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addresses.push(closed.local_addr().unwrap());
        }
        let lost = race(
            &addresses,
            &ConnectConfig::default(),
            Instant::now() + Duration::from_secs(5),
            &Failures::default(),
        )
        .await
        .unwrap_err();
        assert!(lost.is_refused);
        assert_eq!(lost.errors.len(), 2, "{:?}", lost.errors);
    }
}
