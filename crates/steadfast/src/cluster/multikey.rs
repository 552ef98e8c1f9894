//! Multi-key commands over several slots, split per slot and joined in the caller's order.
//!
//! # Behaviour
//! - `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS` and `TOUCH` whose keys hash to more than one
//!   slot become one command per slot (keys in the caller's order within each), sent as one
//!   pipeline over the cluster (one part per node, at the same time).
//! - The replies are joined as one server would have answered: `MGET` the values in the
//!   caller's key order, `MSET` `OK`, the others the sum of the counts (as redis-rs's
//!   `cluster_async` does).
//! - Split, `MSET` is not atomic any more: when one part fails the call fails, saying how many
//!   parts failed, and the other parts may have been applied.
//! - Keys of one slot (or hash tag) are not split: the command goes as it is.

use redis::{Arg, Cmd, Pipeline, Value};

use super::key_slot;
use crate::error::{Error, ErrorKind};
use crate::policy::name::{Name, Table};

/// How the parts' replies become one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Join {
    /// `MGET`: values back in the caller's key order.
    Values,
    /// `MSET`: `OK` when every part said so.
    Okay,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: the sum of the counts.
    Sum,
}

static SPLITTABLE: Table<(Join, usize)> = Table::new(|| {
    vec![
        (b"MGET", (Join::Values, 1)),
        (b"MSET", (Join::Okay, 2)),
        (b"DEL", (Join::Sum, 1)),
        (b"UNLINK", (Join::Sum, 1)),
        (b"EXISTS", (Join::Sum, 1)),
        (b"TOUCH", (Join::Sum, 1)),
    ]
});

/// A multi-key command split per slot.
pub(super) struct Split {
    /// One command per slot, in the order each slot first appears.
    pub(super) pipeline: Pipeline,
    join: Join,
    /// For each key of the caller's command, in order: its part and its place in that part.
    places: Vec<(usize, usize)>,
}

impl Split {
    /// `cmd` split per slot, or `None` when it is not a splittable command or its keys share
    /// one slot.
    pub(super) fn of(cmd: &Cmd) -> Option<Self> {
        let mut args = cmd.args_iter();
        let Some(Arg::Simple(name)) = args.next() else {
            return None;
        };
        let (join, width) = SPLITTABLE.get(&Name::new(name)?)?;
        let args: Vec<&[u8]> = args
            .map(|arg| match arg {
                Arg::Simple(bytes) => Some(bytes),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if args.is_empty() || !args.len().is_multiple_of(width) {
            // Let the server answer the wrong arity as it would.
            return None;
        }
        let mut slots: Vec<u16> = Vec::new();
        let mut parts: Vec<Cmd> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        let mut places = Vec::with_capacity(args.len() / width);
        for group in args.chunks(width) {
            let slot = key_slot(group[0]);
            let part = match slots.iter().position(|&s| s == slot) {
                Some(part) => part,
                None => {
                    slots.push(slot);
                    parts.push(redis::cmd(&String::from_utf8_lossy(name)));
                    sizes.push(0);
                    slots.len() - 1
                }
            };
            for arg in group {
                parts[part].arg(*arg);
            }
            places.push((part, sizes[part]));
            sizes[part] += 1;
        }
        if parts.len() < 2 {
            return None;
        }
        let mut pipeline = redis::pipe();
        for part in parts {
            pipeline.add_command(part);
        }
        Some(Self {
            pipeline,
            join,
            places,
        })
    }

    /// How many parts (commands of the pipeline) there are.
    pub(super) fn parts(&self) -> usize {
        self.pipeline.len()
    }

    /// The one reply the caller's command would have had, from the parts' replies in order.
    ///
    /// # Errors
    /// The first part's error reply, if any ([`ErrorKind::Server`]), or a reply of a shape no
    /// server sends for these commands.
    pub(super) fn join(&self, replies: Vec<Value>) -> Result<Value, Error> {
        if let Some(Value::ServerError(error)) =
            replies.iter().find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(Error::from_redis(
                ErrorKind::Server,
                "a part of a command split over several slots (the other parts may have been applied)",
                error.clone().into(),
            ));
        }
        let unexpected = |what: &Value| {
            Error::new(
                ErrorKind::Server,
                format!("unexpected reply to a part of a split command: {what:?}"),
            )
        };
        match self.join {
            Join::Okay => Ok(Value::Okay),
            Join::Sum => replies
                .iter()
                .try_fold(Value::Int(0), |sum, reply| match (sum, reply) {
                    (Value::Int(sum), Value::Int(n)) => Ok(Value::Int(sum + n)),
                    (_, other) => Err(unexpected(other)),
                }),
            Join::Values => {
                let mut parts: Vec<Vec<Value>> = Vec::with_capacity(replies.len());
                for reply in replies {
                    match reply {
                        Value::Array(values) => parts.push(values),
                        other => return Err(unexpected(&other)),
                    }
                }
                let mut joined = Vec::with_capacity(self.places.len());
                for &(part, at) in &self.places {
                    let value = parts
                        .get_mut(part)
                        .and_then(|values| values.get_mut(at))
                        .map(|value| std::mem::replace(value, Value::Nil))
                        .ok_or_else(|| unexpected(&Value::Nil))?;
                    joined.push(value);
                }
                Ok(Value::Array(joined))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys on three different slots, found by their hash tags.
    const KEYS: [&str; 3] = ["{a}1", "{b}1", "{c}1"];

    #[test]
    fn keys_of_one_slot_are_not_split() {
        assert!(Split::of(redis::cmd("MGET").arg("{t}1").arg("{t}2")).is_none());
        assert!(Split::of(redis::cmd("GET").arg("k")).is_none());
        assert!(Split::of(redis::cmd("MSET").arg("{a}1").arg("v").arg("{b}1")).is_none());
    }

    #[test]
    fn mget_parts_are_joined_in_the_callers_key_order() {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(KEYS[0]).arg(KEYS[1]).arg("{a}2").arg(KEYS[2]);
        let split = Split::of(&cmd).unwrap();
        assert_eq!(split.parts(), 3);
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let replies = vec![
            Value::Array(vec![bulk("a1"), Value::Nil]),
            Value::Array(vec![bulk("b1")]),
            Value::Array(vec![bulk("c1")]),
        ];
        assert_eq!(
            split.join(replies).unwrap(),
            Value::Array(vec![bulk("a1"), bulk("b1"), Value::Nil, bulk("c1")])
        );
    }

    #[test]
    fn counts_are_summed_and_mset_is_ok() {
        let mut del = redis::cmd("DEL");
        del.arg(&KEYS[..]);
        let split = Split::of(&del).unwrap();
        assert_eq!(
            split
                .join(vec![Value::Int(1), Value::Int(0), Value::Int(1)])
                .unwrap(),
            Value::Int(2)
        );
        let mut mset = redis::cmd("MSET");
        mset.arg(KEYS[0]).arg(1).arg(KEYS[1]).arg(2);
        let split = Split::of(&mset).unwrap();
        assert_eq!(split.parts(), 2);
        assert_eq!(
            split.join(vec![Value::Okay, Value::Okay]).unwrap(),
            Value::Okay
        );
    }

    #[test]
    fn an_error_in_one_part_fails_the_whole_call() {
        let mut del = redis::cmd("DEL");
        del.arg(&KEYS[..2]);
        let split = Split::of(&del).unwrap();
        let refused = redis::parse_redis_value(b"-ERR out of memory\r\n").unwrap();
        assert!(split.join(vec![Value::Int(1), refused]).is_err());
    }
}
