//! `CLUSTER ...` through a proxy on a cluster: the proxy is one node owning every slot, at
//! the address the client reached it by, so cluster-mode clients (ioredis `Cluster`,
//! StackExchange.Redis, redis-py's `RedisCluster`) send everything to it and the proxy routes.
//! On a single endpoint, `CLUSTER ...` goes to the server as it is.

use redis::Value;

use super::{Connection, text, upper};
use crate::resp;

/// The last slot.
const LAST_SLOT: i64 = 16_383;

impl Connection<'_> {
    pub(super) async fn cluster(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        if !self.shared.config.is_cluster {
            return self.forward(args, out).await;
        }
        let sub = args.get(1).map(|a| upper(a)).unwrap_or_default();
        let (ip, port) = self.advertised();
        let id = node_id(&ip, port);
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = match (sub.as_str(), args.len()) {
            ("SLOTS", 2) => Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(LAST_SLOT),
                Value::Array(vec![bulk(&ip), Value::Int(i64::from(port)), bulk(&id)]),
            ])]),
            ("SHARDS", 2) => {
                let node = Value::Map(vec![
                    (bulk("id"), bulk(&id)),
                    (bulk("port"), Value::Int(i64::from(port))),
                    (bulk("ip"), bulk(&ip)),
                    (bulk("endpoint"), bulk(&ip)),
                    (bulk("role"), bulk("master")),
                    (bulk("replication-offset"), Value::Int(0)),
                    (bulk("health"), bulk("online")),
                ]);
                Value::Array(vec![Value::Map(vec![
                    (
                        bulk("slots"),
                        Value::Array(vec![Value::Int(0), Value::Int(LAST_SLOT)]),
                    ),
                    (bulk("nodes"), Value::Array(vec![node])),
                ])])
            }
            ("NODES", 2) => bulk(&format!(
                "{id} {ip}:{port}@{} myself,master - 0 0 1 connected 0-{LAST_SLOT}\n",
                u32::from(port) + 10_000
            )),
            ("INFO", 2) => bulk(
                &[
                    "cluster_enabled:1",
                    "cluster_state:ok",
                    "cluster_slots_assigned:16384",
                    "cluster_slots_ok:16384",
                    "cluster_slots_pfail:0",
                    "cluster_slots_fail:0",
                    "cluster_known_nodes:1",
                    "cluster_size:1",
                    "cluster_current_epoch:1",
                    "cluster_my_epoch:1",
                    "",
                ]
                .join("\r\n"),
            ),
            ("MYID" | "MYSHARDID", 2) => bulk(&id),
            ("KEYSLOT", 3) => Value::Int(i64::from(steadfast::cluster::key_slot(&args[2]))),
            ("SLOTS" | "SHARDS" | "NODES" | "INFO" | "MYID" | "MYSHARDID" | "KEYSLOT", _) => {
                return resp::write_error(
                    out,
                    &format!(
                        "ERR wrong number of arguments for 'cluster|{}' command",
                        sub.to_lowercase()
                    ),
                );
            }
            _ => {
                return resp::write_error(
                    out,
                    &format!(
                        "ERR steadfast proxy: CLUSTER {} is not answered through the proxy (it stands for the whole cluster as one node)",
                        text(args.get(1).map_or(&[][..], Vec::as_slice))
                    ),
                );
            }
        };
        resp::write_value(out, &reply, self.protocol);
    }

    /// The address the client reached the proxy by (loopback's default port over a Unix
    /// socket).
    fn advertised(&self) -> (String, u16) {
        self.local.map_or_else(
            || ("127.0.0.1".to_owned(), 6379),
            |a| (a.ip().to_string(), a.port()),
        )
    }
}

/// The proxy's node id at `ip:port`: 40 hexadecimal digits, the same for every connection
/// that reached it there.
fn node_id(ip: &str, port: u16) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in ip.bytes().chain(port.to_be_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("5eadfa57{hash:016x}{:016x}", hash.rotate_left(32))
}

#[cfg(test)]
mod tests {
    use super::node_id;

    #[test]
    fn a_node_id_is_forty_hex_digits_and_depends_on_the_address() {
        let id = node_id("127.0.0.1", 6379);
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, node_id("127.0.0.1", 6379));
        assert_ne!(id, node_id("127.0.0.1", 6380));
    }
}
