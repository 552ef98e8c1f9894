//! A command's name, upper-cased on the stack, for looking it up in tables without
//! allocating (the cluster router and the retry policy look at every command's name).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use redis::{Arg, Cmd};

/// Longer than any command name Redis or Valkey has (`GEORADIUSBYMEMBER_RO` is 20).
const LONGEST: usize = 32;

/// An upper-cased command name.
pub(crate) struct Name {
    bytes: [u8; LONGEST],
    len: usize,
}

impl Name {
    /// `name` upper-cased; `None` when it is longer than any real command name.
    pub(crate) fn new(name: &[u8]) -> Option<Self> {
        if name.len() > LONGEST {
            return None;
        }
        let mut bytes = [0u8; LONGEST];
        for (to, from) in bytes.iter_mut().zip(name) {
            *to = from.to_ascii_uppercase();
        }
        Some(Self {
            bytes,
            len: name.len(),
        })
    }

    /// The name of `cmd` (its first argument).
    pub(crate) fn of(cmd: &Cmd) -> Option<Self> {
        match cmd.args_iter().next()? {
            Arg::Simple(name) => Self::new(name),
            _ => None,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Upper-case names mapped to a value, built once: one hash lookup per command instead of a
/// scan of every name (measured by the cluster throughput bench: scans were a tenth of the
/// client's time on pipelines of 100 commands). A name whose length and first letter no entry
/// has is answered without hashing, and hashing is FNV-1a, not `std`'s SipHash (names are
/// short and not chosen by an attacker who could profit from collisions): `cargo bench -p
/// steadfast --bench policy -- "is idempotent"` went from 29.9 to 26.0 ns for `GET`
/// (BENCHMARKS.md, "Happy path after the smaller command future").
pub(crate) struct Table<T: Copy + 'static> {
    built: std::sync::OnceLock<Built<T>>,
    build: fn() -> Vec<(&'static [u8], T)>,
}

struct Built<T> {
    /// Bit `b` of `starts[len]`: some name of `len` bytes starts with byte `b`.
    starts: [[u64; 4]; LONGEST + 1],
    names: HashMap<&'static [u8], T, BuildHasherDefault<Fnv>>,
}

impl<T: Copy + 'static> Table<T> {
    pub(crate) const fn new(build: fn() -> Vec<(&'static [u8], T)>) -> Self {
        Self {
            built: std::sync::OnceLock::new(),
            build,
        }
    }

    /// The entry for `cmd`'s name (its first argument, in any case). A name whose length and
    /// first letter no entry has is answered before it is upper-cased (most commands a client
    /// sends are in no table but the read table): `cargo bench -p steadfast --bench policy --
    /// "plan a pipeline"`.
    pub(crate) fn of(&self, cmd: &Cmd) -> Option<T> {
        let Some(Arg::Simple(raw)) = cmd.args_iter().next() else {
            return None;
        };
        let built = self.built();
        if let Some(first) = raw.first()
            && !built.may_hold(raw.len(), first.to_ascii_uppercase())
        {
            return None;
        }
        built.names.get(Name::new(raw)?.as_bytes()).copied()
    }

    pub(crate) fn get(&self, name: &Name) -> Option<T> {
        let built = self.built();
        let bytes = name.as_bytes();
        if let Some(first) = bytes.first()
            && !built.may_hold(bytes.len(), *first)
        {
            return None;
        }
        built.names.get(bytes).copied()
    }

    fn built(&self) -> &Built<T> {
        self.built.get_or_init(|| {
            let mut starts = [[0u64; 4]; LONGEST + 1];
            let entries = (self.build)();
            for (name, _) in &entries {
                if let (Some(first), Some(row)) = (name.first(), starts.get_mut(name.len())) {
                    row[usize::from(*first / 64)] |= 1 << (first % 64);
                }
            }
            Built {
                starts,
                names: entries.into_iter().collect(),
            }
        })
    }
}

impl<T> Built<T> {
    /// Whether some entry is `len` bytes long and starts with `first` (upper case).
    fn may_hold(&self, len: usize, first: u8) -> bool {
        self.starts
            .get(len)
            .is_some_and(|row| row[usize::from(first / 64)] & (1 << (first % 64)) != 0)
    }
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_any_case_and_long_ones_are_not_names() {
        static TABLE: Table<u8> = Table::new(|| vec![(b"GET", 1), (b"HGET", 2), (b"SET", 3)]);
        assert_eq!(Name::new(b"get").and_then(|n| TABLE.get(&n)), Some(1));
        assert_eq!(Name::new(b"hGeT").and_then(|n| TABLE.get(&n)), Some(2));
        assert_eq!(Name::new(b"GETSET").and_then(|n| TABLE.get(&n)), None);
        assert!(Name::new(&[b'A'; 33]).is_none());
        assert!(Name::of(&redis::cmd("set")).is_some_and(|n| n.as_bytes() == b"SET"));
        assert_eq!(
            TABLE.of(&redis::cmd("hget")),
            Some(2),
            "a command, in any case"
        );
        assert_eq!(TABLE.of(&redis::cmd("gets")), None);
        assert_eq!(
            TABLE.of(&redis::cmd("xget")),
            None,
            "filtered before upper-casing"
        );
        assert_eq!(TABLE.of(&redis::Cmd::new()), None, "no name at all");
    }

    #[test]
    fn a_name_sharing_only_its_length_or_its_first_letter_with_an_entry_is_not_found() {
        static TABLE: Table<u8> = Table::new(|| vec![(b"GET", 1), (b"", 2), (b"SETEX", 3)]);
        for (name, found) in [
            (&b"GEX"[..], None),
            (b"GETS", None),
            (b"SET", None),
            (b"SETEY", None),
            (b"setex", Some(3)),
            (b"", Some(2)),
            (&[b'Z'; 32], None),
        ] {
            assert_eq!(
                Name::new(name).and_then(|n| TABLE.get(&n)),
                found,
                "{name:?}"
            );
        }
    }
}
