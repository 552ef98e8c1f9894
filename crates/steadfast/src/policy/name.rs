//! A command's name, upper-cased on the stack, for looking it up in tables without
//! allocating (the cluster router and the retry policy look at every command's name).

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
/// client's time on pipelines of 100 commands).
pub(crate) struct Table<T: Copy + 'static> {
    built: std::sync::OnceLock<std::collections::HashMap<&'static [u8], T>>,
    build: fn() -> Vec<(&'static [u8], T)>,
}

impl<T: Copy + 'static> Table<T> {
    pub(crate) const fn new(build: fn() -> Vec<(&'static [u8], T)>) -> Self {
        Self {
            built: std::sync::OnceLock::new(),
            build,
        }
    }

    pub(crate) fn get(&self, name: &Name) -> Option<T> {
        self.built
            .get_or_init(|| (self.build)().into_iter().collect())
            .get(name.as_bytes())
            .copied()
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
    }
}
