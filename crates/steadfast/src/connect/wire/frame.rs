//! Where one RESP2 / RESP3 frame ends in a byte stream, without decoding it.
//!
//! # Behaviour
//! - Every type of both protocols is known: simple strings, errors, integers, null, booleans,
//!   doubles and big numbers (one line); bulk strings, bulk errors and verbatim strings (a length
//!   line, the bytes, CRLF); arrays, sets, pushes, maps and attributes (a count line, then that
//!   many frames, twice as many for maps and attributes; an attribute annotates the frame after
//!   it, and counts as one frame with it).
//! - A frame that is not complete yet asks for more bytes (`Ok(None)`); bytes that cannot be
//!   RESP (an unknown type byte, a length that is no number, a bulk not followed by CRLF,
//!   nesting deeper than [`MAX_DEPTH`]) are [`Malformed`]: the stream cannot be read further.
//! - A scan starts from the frame's first byte every time: a large aggregate arriving in many
//!   reads is scanned again per read (its bulks are skipped by length, not read).

/// Deepest nesting accepted; Redis's own replies nest a few levels.
const MAX_DEPTH: usize = 64;

/// Bytes that cannot be RESP; what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl std::error::Error for Malformed {}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not the Redis protocol: {}", self.0)
    }
}

/// The length of the first complete frame in `buf`; `None` while more bytes are needed.
pub(crate) fn length(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    scan(buf, 0, 0)
}

/// Whether `frame` (a whole frame) is a push confirming a subscription change (`>3`,
/// `subscribe`, ... : a reply to the command that asked for it, in RESP3).
pub(crate) fn is_confirmation(frame: &[u8]) -> bool {
    const KINDS: [&[u8]; 6] = [
        b"subscribe",
        b"psubscribe",
        b"ssubscribe",
        b"unsubscribe",
        b"punsubscribe",
        b"sunsubscribe",
    ];
    if frame.first() != Some(&b'>') {
        return false;
    }
    let Some(eol) = line_end(frame, 1) else {
        return false;
    };
    let kind = match frame.get(eol + 2) {
        Some(b'+') => line_end(frame, eol + 3).map(|end| &frame[eol + 3..end]),
        Some(b'$') => line_end(frame, eol + 3).and_then(|end| {
            let len: usize = std::str::from_utf8(&frame[eol + 3..end])
                .ok()?
                .parse()
                .ok()?;
            frame.get(end + 2..end + 2 + len)
        }),
        _ => None,
    };
    kind.is_some_and(|kind| KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind)))
}

/// Where the line that starts at `from` ends (its CR), if it is complete.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let mut at = 0;
    loop {
        let cr = rest.get(at..)?.iter().position(|&b| b == b'\r')? + at;
        match rest.get(cr + 1) {
            Some(b'\n') => return Some(from + cr),
            Some(_) => at = cr + 1,
            None => return None,
        }
    }
}

/// A length or count line's number: digits, or `-1`.
fn number(line: &[u8]) -> Result<i64, Malformed> {
    const NOT_A_NUMBER: Malformed = Malformed("a length that is not a number");
    let (is_negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(NOT_A_NUMBER);
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return Err(NOT_A_NUMBER);
        }
        value = value * 10 + i64::from(digit - b'0');
    }
    Ok(if is_negative { -value } else { value })
}

/// The end of the frame starting at `at`.
fn scan(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("nested deeper than 64"));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(eol) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let after_line = eol + 2;
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(after_line)),
        b'$' | b'!' | b'=' => {
            let len = number(&buf[at + 1..eol])?;
            if len == -1 {
                return Ok(Some(after_line));
            }
            let len = usize::try_from(len).map_err(|_| Malformed("a negative length"))?;
            let end = after_line
                .checked_add(len)
                .and_then(|end| end.checked_add(2))
                .ok_or(Malformed("a length beyond memory"))?;
            match buf.get(end - 2..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(end)),
                Some(_) => Err(Malformed("a bulk longer than its length")),
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let count = number(&buf[at + 1..eol])?;
            if count == -1 {
                return Ok(Some(after_line));
            }
            let count = usize::try_from(count).map_err(|_| Malformed("a negative count"))?;
            let elements = if matches!(kind, b'%' | b'|') {
                count
                    .checked_mul(2)
                    .ok_or(Malformed("a count beyond memory"))?
            } else {
                count
            };
            let mut cursor = after_line;
            for _ in 0..elements {
                match scan(buf, cursor, depth + 1)? {
                    Some(end) => cursor = end,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute map comes before the frame it annotates.
                return scan(buf, cursor, depth + 1);
            }
            Ok(Some(cursor))
        }
        _ => Err(Malformed("an unknown type byte")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lengths_are_digits_or_minus_one_and_nothing_else() {
        assert_eq!(number(b"0"), Ok(0));
        assert_eq!(number(b"512"), Ok(512));
        assert_eq!(number(b"-1"), Ok(-1));
        for bad in [&b""[..], b"-", b"+5", b"1a", b" 1", b"1234567890123456789"] {
            assert!(number(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subscription_confirmations_are_told_from_other_pushes() {
        assert!(is_confirmation(
            b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
        ));
        assert!(is_confirmation(b">3\r\n+SUNSUBSCRIBE\r\n$1\r\nc\r\n:0\r\n"));
        assert!(!is_confirmation(
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"
        ));
        assert!(!is_confirmation(
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
        ));
        assert!(!is_confirmation(b">1\r\n$99\r\nsub\r\n"));
    }

    #[test]
    fn every_type_of_both_protocols_has_its_exact_length() {
        let frames: [&[u8]; 17] = [
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":42\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",1.5\r\n",
            b"(12345678901234567890\r\n",
            b"$3\r\nabc\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"!3\r\nERR\r\n",
            b"=7\r\ntxt:a\r\n\r\n",
            b"*2\r\n:1\r\n$1\r\nx\r\n",
            b"*-1\r\n",
            b"%1\r\n+a\r\n:1\r\n",
            b">3\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n_\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        ];
        for frame in frames {
            let mut followed = frame.to_vec();
            followed.extend_from_slice(b"+next\r\n");
            assert_eq!(
                length(&followed),
                Ok(Some(frame.len())),
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn a_bulk_holding_crlf_is_skipped_by_its_length() {
        assert_eq!(length(b"$4\r\n\r\n\r\n\r\n"), Ok(Some(10)));
        assert_eq!(length(b"+a\rb\r\n"), Ok(Some(6)));
    }

    #[test]
    fn an_incomplete_frame_asks_for_more() {
        for prefix in [
            &b""[..],
            b"+OK",
            b"+OK\r",
            b"$5\r\nab",
            b"$5\r\nabcde\r",
            b"*2\r\n:1\r\n",
            b"|1\r\n+ttl\r\n:3\r\n",
        ] {
            assert_eq!(
                length(prefix),
                Ok(None),
                "{}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn bytes_that_are_not_resp_are_malformed() {
        for bad in [
            &b"?what\r\n"[..],
            b"$x\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b"*-5\r\n",
            b"*1\r\n?\r\n",
        ] {
            assert!(length(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert_eq!(
            length(deep.as_bytes()),
            Err(Malformed("nested deeper than 64"))
        );
    }

    /// A random RESP frame, encoded.
    fn frame() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            Just(b"_\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|bytes| {
                let mut out = format!("${}\r\n", bytes.len()).into_bytes();
                out.extend_from_slice(&bytes);
                out.extend_from_slice(b"\r\n");
                out
            }),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            (
                prop_oneof![Just('*'), Just('~'), Just('>'), Just('%')],
                proptest::collection::vec(inner, 0..6),
            )
                .prop_map(|(kind, elements)| {
                    let count = if kind == '%' {
                        elements.len() / 2
                    } else {
                        elements.len()
                    };
                    let mut out = format!("{kind}{count}\r\n").into_bytes();
                    for element in elements
                        .iter()
                        .take(if kind == '%' { count * 2 } else { count })
                    {
                        out.extend_from_slice(element);
                    }
                    out
                })
        })
    }

    proptest! {
        #[test]
        fn a_frame_is_found_whole_and_none_of_its_prefixes_is(frame in frame(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut stream = frame.clone();
            stream.extend_from_slice(&tail);
            prop_assert_eq!(length(&stream), Ok(Some(frame.len())));
            for cut in 0..frame.len() {
                prop_assert_eq!(length(&frame[..cut]), Ok(None));
            }
        }

        #[test]
        fn any_bytes_give_an_answer_and_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some(end)) = length(&bytes) {
                prop_assert!(end <= bytes.len());
            }
        }
    }
}
