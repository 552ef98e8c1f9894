//! Whole frames into redis-rs values: the common types read here directly, the rest (errors,
//! doubles, big numbers, verbatim strings, pushes, attributes) by redis-rs's own parser, so
//! every value is exactly the one redis-rs would make.

use redis::{Parser, RedisResult, Value};

/// Every frame of `bytes` (whole frames, as a wire hands them), decoded.
pub(crate) fn values(bytes: &[u8]) -> RedisResult<Vec<Value>> {
    let mut parser = None;
    let mut values = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (value, length) = decode(&bytes[at..], &mut parser)?;
        values.push(value);
        at += length;
    }
    Ok(values)
}

fn cut_short() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "a reply cut short"))
}

/// The line after the type byte of the frame at the start of `bytes`, and where the next
/// part starts.
fn line(bytes: &[u8]) -> RedisResult<(&[u8], usize)> {
    let end = bytes
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .ok_or_else(cut_short)?;
    Ok((&bytes[1..end], end + 2))
}

fn integer(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The value of the frame at the start of `bytes`, and its length.
fn decode(bytes: &[u8], parser: &mut Option<Parser>) -> RedisResult<(Value, usize)> {
    let Some(&kind) = bytes.first() else {
        return Err(cut_short());
    };
    let fast = match kind {
        b'+' | b':' | b'$' | b'*' | b'_' | b'%' | b'~' | b'#' => {
            let (text, after) = line(bytes)?;
            match kind {
                b'+' if text == b"OK" => Some((Value::Okay, after)),
                b'+' => std::str::from_utf8(text)
                    .ok()
                    .map(|text| (Value::SimpleString(text.to_owned()), after)),
                b':' => integer(text).map(|n| (Value::Int(n), after)),
                b'_' => Some((Value::Nil, after)),
                b'#' => match text {
                    b"t" => Some((Value::Boolean(true), after)),
                    b"f" => Some((Value::Boolean(false), after)),
                    _ => None,
                },
                b'$' => match integer(text) {
                    Some(-1) => Some((Value::Nil, after)),
                    Some(length) if length < 0 => None,
                    Some(length) => {
                        let length = usize::try_from(length).map_err(|_| cut_short())?;
                        let end = after + length;
                        match bytes.get(end..end + 2) {
                            Some(b"\r\n") => {
                                Some((Value::BulkString(bytes[after..end].to_vec()), end + 2))
                            }
                            _ => return Err(cut_short()),
                        }
                    }
                    None => None,
                },
                _ => match integer(text) {
                    Some(-1) if kind == b'*' => Some((Value::Nil, after)),
                    // Any other negative count: as redis-rs reads it.
                    Some(count) if count < 0 => None,
                    Some(count) => {
                        let count = usize::try_from(count).map_err(|_| cut_short())?;
                        Some(aggregate(kind, count, bytes, after, parser)?)
                    }
                    None => None,
                },
            }
        }
        _ => None,
    };
    match fast {
        Some(decoded) => Ok(decoded),
        None => {
            // Not a common type (or an unusual one of them): redis-rs's parser, on this frame.
            let length = super::frame::length(bytes)
                .ok()
                .flatten()
                .ok_or_else(cut_short)?;
            let parser = parser.get_or_insert_with(Parser::new);
            Ok((parser.parse_value(&bytes[..length])?, length))
        }
    }
}

/// An array, map or set of `count` elements (pairs, for a map) starting at `at`.
fn aggregate(
    kind: u8,
    count: usize,
    bytes: &[u8],
    mut at: usize,
    parser: &mut Option<Parser>,
) -> RedisResult<(Value, usize)> {
    let elements = if kind == b'%' { count * 2 } else { count };
    // Bounded by the bytes there are: every element takes at least three.
    let mut items = Vec::with_capacity(elements.min(bytes.len() / 3));
    for _ in 0..elements {
        let (item, length) = decode(bytes.get(at..).ok_or_else(cut_short)?, parser)?;
        items.push(item);
        at += length;
    }
    let value = match kind {
        b'%' => {
            let mut pairs = Vec::with_capacity(count);
            let mut items = items.into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                pairs.push((key, value));
            }
            Value::Map(pairs)
        }
        b'~' => Value::Set(items),
        _ => Value::Array(items),
    };
    Ok((value, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_the_one_redis_rs_makes() {
        let frames: [&[u8]; 19] = [
            b"+OK\r\n",
            b"+PONG\r\n",
            b"-ERR no\r\n",
            b"-MOVED 1 127.0.0.1:7001\r\n",
            b":42\r\n",
            b":-7\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",1.5\r\n",
            b"$3\r\nabc\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"~-1\r\n",
            b"*3\r\n:1\r\n$1\r\nx\r\n*1\r\n-ERR inside\r\n",
            b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n~1\r\n:2\r\n",
            b"=7\r\ntxt:a\r\n\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        ];
        for frame in frames {
            let expected = redis::parse_redis_value(frame).unwrap();
            let mut all = values(frame).unwrap();
            assert_eq!(all.len(), 1, "{frame:?}");
            assert_eq!(all.pop().unwrap(), expected, "{frame:?}");
        }
        let both = values(b"+OK\r\n$1\r\nv\r\n").unwrap();
        assert_eq!(both, vec![Value::Okay, Value::BulkString(b"v".to_vec())]);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_fail_and_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let _ = values(&bytes);
        }
    }

    #[test]
    fn a_frame_cut_short_is_an_error_not_a_panic() {
        for cut in [&b"$5\r\nab"[..], b"*2\r\n:1\r\n", b"+OK", b"%1\r\n+a\r\n"] {
            assert!(values(cut).is_err(), "{cut:?}");
        }
    }
}
