//! Which of the 16,384 slots a key belongs to.
//!
//! # Behaviour
//! - The slot is CRC16 (XMODEM: polynomial 0x1021, initial value 0) of the key, modulo 16,384.
//! - Hash tags: if the key holds a `{` followed later by a `}` with at least one byte between them,
//!   only the bytes between the first `{` and the first `}` after it are hashed, so `{user1}.name`
//!   and `{user1}.email` share a slot. `{}` (nothing between) does not count: the whole key is
//!   hashed.

/// The number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// CRC16/XMODEM, one table entry per byte value, computed at compile time.
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// The part of `key` that is hashed: the hash tag if it has one, else all of it.
pub fn hashed_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// The slot of `key`, in `0..16384`.
///
/// ```
/// use steadfast::cluster::key_slot;
/// assert_eq!(key_slot(b"foo"), 12182);
/// assert_eq!(key_slot(b"{user1}.name"), key_slot(b"{user1}.email"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit by bit, straight from the definition, to check the table.
    fn crc16_by_bits(bytes: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in bytes {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn the_checksum_of_the_standard_check_string_is_0x31c3() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_agree_with_those_a_redis_server_reports() {
        // From CLUSTER KEYSLOT on redis-server 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn a_hash_tag_hashes_only_what_is_between_the_first_braces() {
        assert_eq!(hashed_part(b"{user1}.name"), b"user1");
        assert_eq!(hashed_part(b"a{b}{c}"), b"b");
        assert_eq!(hashed_part(b"a{b{c}d}"), b"b{c");
        assert_eq!(key_slot(b"{user1}.name"), key_slot(b"user1"));
    }

    #[test]
    fn empty_or_unclosed_braces_hash_the_whole_key() {
        assert_eq!(hashed_part(b"{}.name"), b"{}.name");
        assert_eq!(hashed_part(b"{user1.name"), b"{user1.name");
        assert_eq!(hashed_part(b"}{"), b"}{");
    }

    proptest! {
        #[test]
        fn the_table_matches_the_bitwise_definition(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(crc16(&bytes), crc16_by_bits(&bytes));
        }

        #[test]
        fn every_key_has_a_slot_in_range(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert!(key_slot(&bytes) < SLOTS);
        }
    }
}
