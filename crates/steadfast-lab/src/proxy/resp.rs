//! Finding RESP2/RESP3 frame boundaries in a byte stream, without decoding values.

/// Deepest nesting accepted; deeper input is malformed.
const MAX_DEPTH: usize = 64;

/// A frame the proxy cannot scan; the connection is closed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The length of the first complete frame in `buf`, `None` if more bytes are needed.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    scan(buf, 0, 0)
}

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

fn number(buf: &[u8], start: usize, end: usize) -> Result<i64, Malformed> {
    std::str::from_utf8(&buf[start..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed)
}

fn scan(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed);
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(eol) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let after_line = eol + 2;
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(after_line - at)),
        b'$' | b'!' | b'=' => {
            let len = number(buf, at + 1, eol)?;
            if len < 0 {
                return Ok(Some(after_line - at));
            }
            let end = after_line
                .checked_add(usize::try_from(len).map_err(|_| Malformed)?)
                .and_then(|e| e.checked_add(2))
                .ok_or(Malformed)?;
            if buf.len() < end {
                Ok(None)
            } else if &buf[end - 2..end] == b"\r\n" {
                Ok(Some(end - at))
            } else {
                Err(Malformed)
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let count = number(buf, at + 1, eol)?;
            if count < 0 {
                return Ok(Some(after_line - at));
            }
            let elements = usize::try_from(count).map_err(|_| Malformed)?;
            let elements = if matches!(kind, b'%' | b'|') {
                elements.checked_mul(2).ok_or(Malformed)?
            } else {
                elements
            };
            let mut cursor = after_line;
            for _ in 0..elements {
                match scan(buf, cursor, depth + 1)? {
                    Some(len) => cursor += len,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute map precedes the value it annotates.
                return match scan(buf, cursor, depth + 1)? {
                    Some(len) => Ok(Some(cursor + len - at)),
                    None => Ok(None),
                };
            }
            Ok(Some(cursor - at))
        }
        _ => Err(Malformed),
    }
}

/// The first two arguments of a command frame (`*N` of bulk strings), upper-cased.
pub(crate) fn command_head(frame: &[u8]) -> (String, String) {
    let mut args = Vec::new();
    let mut cursor = match line_end(frame, 0) {
        Some(eol) => eol + 2,
        None => return Default::default(),
    };
    while args.len() < 2 {
        let Some(eol) = line_end(frame, cursor) else {
            break;
        };
        if frame.get(cursor) != Some(&b'$') {
            break;
        }
        let Ok(len) = number(frame, cursor + 1, eol) else {
            break;
        };
        let start = eol + 2;
        let Some(end) = usize::try_from(len).ok().map(|l| start + l) else {
            break;
        };
        let Some(arg) = frame.get(start..end) else {
            break;
        };
        args.push(String::from_utf8_lossy(arg).to_ascii_uppercase());
        cursor = end + 2;
    }
    let mut args = args.into_iter();
    (
        args.next().unwrap_or_default(),
        args.next().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_bulk_and_nested_frames_have_exact_lengths() {
        assert_eq!(frame_len(b"+OK\r\nrest"), Ok(Some(5)));
        assert_eq!(frame_len(b"$3\r\nabc\r\n"), Ok(Some(9)));
        assert_eq!(frame_len(b"$-1\r\n"), Ok(Some(5)));
        assert_eq!(frame_len(b"*2\r\n:1\r\n$1\r\nx\r\n+next"), Ok(Some(15)));
        assert_eq!(frame_len(b">3\r\n+MOVING\r\n:1\r\n_\r\n"), Ok(Some(20)));
        assert_eq!(frame_len(b"%1\r\n+a\r\n:1\r\n"), Ok(Some(12)));
    }

    #[test]
    fn incomplete_frames_ask_for_more() {
        assert_eq!(frame_len(b"$5\r\nab"), Ok(None));
        assert_eq!(frame_len(b"*2\r\n:1\r\n"), Ok(None));
        assert_eq!(frame_len(b"+OK"), Ok(None));
        assert_eq!(frame_len(b""), Ok(None));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert_eq!(frame_len(b"?what\r\n"), Err(Malformed));
        assert_eq!(frame_len(b"$x\r\n"), Err(Malformed));
        assert_eq!(frame_len(b"$3\r\nabcd\r\n"), Err(Malformed));
    }

    #[test]
    fn the_command_head_is_read_from_a_client_frame() {
        let frame = b"*5\r\n$6\r\nclient\r\n$19\r\nMAINT_NOTIFICATIONS\r\n$2\r\nON\r\n$20\r\nmoving-endpoint-type\r\n$11\r\ninternal-ip\r\n";
        assert_eq!(frame_len(frame), Ok(Some(frame.len())));
        assert_eq!(
            command_head(frame),
            ("CLIENT".to_owned(), "MAINT_NOTIFICATIONS".to_owned())
        );
    }
}
