//! Finding RESP2/RESP3 frame boundaries in a byte stream (the library's scanner), and a
//! command frame's first two arguments.

/// The length of the first complete frame in `buf`, `None` if more bytes are needed; an error
/// for bytes that are not RESP. The library's own connection's scanner: the lab's push proxy
/// cuts a stream into exactly the frames the library will.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    steadfast::fuzz_api::resp_frame_length(buf)
}

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

fn number(buf: &[u8], start: usize, end: usize) -> Option<i64> {
    std::str::from_utf8(buf.get(start..end)?).ok()?.parse().ok()
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
        let Some(len) = number(frame, cursor + 1, eol) else {
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
    fn the_command_head_is_read_from_a_client_frame() {
        let frame = b"*5\r\n$6\r\nclient\r\n$19\r\nMAINT_NOTIFICATIONS\r\n$2\r\nON\r\n$20\r\nmoving-endpoint-type\r\n$11\r\ninternal-ip\r\n";
        assert_eq!(frame_len(frame), Ok(Some(frame.len())));
        assert_eq!(
            command_head(frame),
            ("CLIENT".to_owned(), "MAINT_NOTIFICATIONS".to_owned())
        );
    }
}
