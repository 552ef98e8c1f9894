//! RESP between the proxy and its downstream clients: requests read defensively (any bytes a
//! client sends give a command, "need more", or a protocol error, never a panic and never an
//! allocation the client's claims alone decide), replies written in the protocol each client
//! chose with `HELLO` (RESP2 by default, RESP3).
//!
//! # Behaviour
//! - Requests are multibulk (`*<n>\r\n$<len>\r\n<bytes>\r\n ...`, what every client library
//!   sends) or inline (`PING\r\n`, what a person types into `telnet`), as the server reads
//!   them: an empty multibulk (`*0`, `*-1`) or an empty line is skipped; inline arguments are
//!   split on blanks, with `"..."` (escapes `\n \r \t \b \a \\ \" \xHH`) and `'...'` quoting.
//! - Limits ([`Limits`]) are checked on the header, before anything is read into memory: the
//!   server's own defaults (a 512 MB bulk, 64 KiB inline and header lines, 1,048,576 arguments).
//!   Their errors are the server's (`Protocol error: invalid bulk length` ...); the connection
//!   is then closed, as the server does.
//! - Replies: RESP3 values are written as they are to a RESP3 client; to a RESP2 client, maps
//!   and sets become arrays (a map's keys and values in turn), doubles, big numbers and
//!   verbatim strings bulk strings, booleans the integers 1 and 0, and a push an array (how a
//!   subscribed RESP2 connection receives its messages).

use std::borrow::Cow;

use redis::Value;

/// The protocol a downstream client chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2 (every connection starts in it).
    Resp2,
    /// RESP3 (`HELLO 3`).
    Resp3,
}

/// What one downstream client may send in one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string (the server's `proto-max-bulk-len`). Default: 512 MB.
    pub max_bulk: usize,
    /// The most arguments in one command. Default: 1,048,576.
    pub max_args: usize,
    /// The longest inline command or header line. Default: 64 KiB.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_line: 64 * 1024,
        }
    }
}

/// A request the proxy cannot read; the connection is answered with it and closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn error(what: &str) -> ProtocolError {
    ProtocolError(what.to_owned())
}

/// What [`read_command`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// A command (its name and arguments, borrowed from the buffer where they stand in it as
    /// they are: a multibulk's; an inline command's are unquoted), and how many bytes it took.
    Command(Vec<Cow<'a, [u8]>>, usize),
    /// Nothing to run (an empty line, `*0`), and how many bytes it took.
    Skip(usize),
    /// The buffer ends inside a command.
    Incomplete {
        /// Bytes needed in all, at least (a hint for a long bulk string, never more than the
        /// limits allow).
        at_least: usize,
    },
}

/// Reads the first command in `buf`.
///
/// # Errors
/// [`ProtocolError`] for bytes no server would accept, or beyond `limits`.
pub fn read_command<'a>(buf: &'a [u8], limits: &Limits) -> Result<Read<'a>, ProtocolError> {
    match buf.first() {
        None => Ok(Read::Incomplete { at_least: 1 }),
        Some(b'*') => read_multibulk(buf, limits),
        Some(_) => read_inline(buf, limits),
    }
}

/// The line starting at `from` (without its `\r\n`), and where the next one starts.
fn line(
    buf: &[u8],
    from: usize,
    limits: &Limits,
    too_long: &str,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(at) if at > 0 && rest[at - 1] == b'\r' => Ok(Some((from + at - 1, from + at + 1))),
        Some(_) => Err(error("a line not ended by CRLF")),
        None if rest.len() > limits.max_line => Err(error(too_long)),
        None => Ok(None),
    }
}

/// A decimal integer as the server reads one (an optional `-`, digits, nothing else).
fn number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -value } else { value })
}

fn read_multibulk<'a>(buf: &'a [u8], limits: &Limits) -> Result<Read<'a>, ProtocolError> {
    let Some((end, mut at)) = line(buf, 0, limits, "too big mbulk count string")? else {
        return Ok(Read::Incomplete {
            at_least: buf.len() + 1,
        });
    };
    let count = number(&buf[1..end]).ok_or_else(|| error("invalid multibulk length"))?;
    if count <= 0 {
        return Ok(Read::Skip(at));
    }
    let count = usize::try_from(count).map_err(|_| error("invalid multibulk length"))?;
    if count > limits.max_args {
        return Err(error("invalid multibulk length"));
    }
    // Grown as arguments arrive, never sized by the client's claim alone.
    let mut args = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let Some((end, next)) = line(buf, at, limits, "too big bulk count string")? else {
            return Ok(Read::Incomplete {
                at_least: buf.len() + 1,
            });
        };
        match buf.get(at) {
            Some(b'$') => {}
            Some(&other) => {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    char::from(other).escape_default()
                )));
            }
            None => return Ok(Read::Incomplete { at_least: at + 1 }),
        }
        let length = number(&buf[at + 1..end])
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= limits.max_bulk)
            .ok_or_else(|| error("invalid bulk length"))?;
        let data_end = next + length;
        if buf.len() < data_end + 2 {
            return Ok(Read::Incomplete {
                at_least: data_end + 2,
            });
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(error("bulk string not terminated by CRLF"));
        }
        args.push(Cow::Borrowed(&buf[next..data_end]));
        at = data_end + 2;
    }
    Ok(Read::Command(args, at))
}

fn read_inline<'a>(buf: &'a [u8], limits: &Limits) -> Result<Read<'a>, ProtocolError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_line {
            return Err(error("too big inline request"));
        }
        return Ok(Read::Incomplete {
            at_least: buf.len() + 1,
        });
    };
    if newline > limits.max_line {
        return Err(error("too big inline request"));
    }
    let text = buf[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..newline]);
    let args = split_args(text).ok_or_else(|| error("unbalanced quotes in request"))?;
    if args.is_empty() {
        return Ok(Read::Skip(newline + 1));
    }
    if args.len() > limits.max_args {
        return Err(error("invalid multibulk length"));
    }
    Ok(Read::Command(
        args.into_iter().map(Cow::Owned).collect(),
        newline + 1,
    ))
}

/// Splits an inline command as the server does (`sdssplitargs`); `None` for unbalanced
/// quotes (or a closing quote not followed by a blank).
fn split_args(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut at = 0;
    loop {
        while text.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let Some(&first) = text.get(at) else {
            return Some(args);
        };
        let arg = if first == b'"' || first == b'\'' {
            let (arg, next) = quoted(text, at)?;
            at = next;
            arg
        } else {
            let mut arg = Vec::new();
            while let Some(&b) = text.get(at).filter(|b| !b.is_ascii_whitespace()) {
                arg.push(b);
                at += 1;
            }
            arg
        };
        args.push(arg);
    }
}

/// The quoted argument opening at `at` (`"` with the escapes `\n \r \t \b \a \xHH` and any
/// other escaped byte as itself, `'` with only `\'`), and where the text goes on; `None` when
/// the quote is not closed or its closing quote is not followed by a blank.
fn quoted(text: &[u8], at: usize) -> Option<(Vec<u8>, usize)> {
    let quote = text[at];
    let is_double = quote == b'"';
    let mut arg = Vec::new();
    let mut at = at + 1;
    loop {
        let byte = *text.get(at)?;
        let next = text.get(at + 1).copied();
        match (byte, next) {
            (b'\\', Some(b'x'))
                if is_double
                    && text.get(at + 2).is_some_and(u8::is_ascii_hexdigit)
                    && text.get(at + 3).is_some_and(u8::is_ascii_hexdigit) =>
            {
                let hex = std::str::from_utf8(&text[at + 2..at + 4]).ok()?;
                arg.push(u8::from_str_radix(hex, 16).ok()?);
                at += 4;
            }
            (b'\\', Some(escaped)) if is_double => {
                arg.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                at += 2;
            }
            (b'\\', Some(b'\'')) => {
                arg.push(b'\'');
                at += 2;
            }
            (closing, _) if closing == quote => {
                at += 1;
                if text.get(at).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return None;
                }
                return Some((arg, at));
            }
            (other, _) => {
                arg.push(other);
                at += 1;
            }
        }
    }
}

/// Writes an error reply: `message` starts with its code (`ERR`, `WRONGTYPE` ...); line breaks
/// in it become spaces (a reply line cannot hold one).
pub fn write_error(out: &mut Vec<u8>, message: &str) {
    out.push(b'-');
    out.extend(
        message
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn write_header(out: &mut Vec<u8>, kind: u8, length: usize) {
    out.push(kind);
    out.extend_from_slice(length.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    write_header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn write_simple(out: &mut Vec<u8>, kind: u8, text: &str) {
    out.push(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// A double as text: what the server writes for the specials, the shortest exact form else.
fn double(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{value:?}")
    }
}

/// Writes `value` as a reply in `protocol`.
pub fn write_value(out: &mut Vec<u8>, value: &Value, protocol: Protocol) {
    let is_3 = protocol == Protocol::Resp3;
    match value {
        Value::Nil if is_3 => out.extend_from_slice(b"_\r\n"),
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Int(n) => write_simple(out, b':', &n.to_string()),
        Value::BulkString(bytes) => write_bulk(out, bytes),
        Value::Array(items) => {
            write_header(out, b'*', items.len());
            for item in items {
                write_value(out, item, protocol);
            }
        }
        Value::SimpleString(text) => write_simple(out, b'+', text),
        Value::Okay => out.extend_from_slice(b"+OK\r\n"),
        Value::Map(pairs) => {
            if is_3 {
                write_header(out, b'%', pairs.len());
            } else {
                write_header(out, b'*', pairs.len() * 2);
            }
            for (key, item) in pairs {
                write_value(out, key, protocol);
                write_value(out, item, protocol);
            }
        }
        // What the attributes annotate is the reply; the attributes are the server's hints.
        Value::Attribute { data, .. } => write_value(out, data, protocol),
        Value::Set(items) => {
            write_header(out, if is_3 { b'~' } else { b'*' }, items.len());
            for item in items {
                write_value(out, item, protocol);
            }
        }
        Value::Double(value) if is_3 => write_simple(out, b',', &double(*value)),
        Value::Double(value) => write_bulk(out, double(*value).as_bytes()),
        Value::Boolean(value) if is_3 => {
            out.extend_from_slice(if *value { b"#t\r\n" } else { b"#f\r\n" });
        }
        Value::Boolean(value) => write_simple(out, b':', if *value { "1" } else { "0" }),
        Value::VerbatimString { format, text } if is_3 => {
            let format = format.to_string();
            write_header(out, b'=', format.len() + 1 + text.len());
            out.extend_from_slice(format.as_bytes());
            out.push(b':');
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Value::VerbatimString { text, .. } => write_bulk(out, text.as_bytes()),
        Value::BigNumber(digits) if is_3 => {
            out.push(b'(');
            out.extend_from_slice(digits);
            out.extend_from_slice(b"\r\n");
        }
        Value::BigNumber(digits) => write_bulk(out, digits),
        Value::Push { kind, data } => {
            write_header(out, if is_3 { b'>' } else { b'*' }, data.len() + 1);
            write_bulk(out, kind.to_string().as_bytes());
            for item in data {
                write_value(out, item, protocol);
            }
        }
        Value::ServerError(error) => {
            let message = match error.details() {
                Some(details) => format!("{} {details}", error.code()),
                None => error.code().to_owned(),
            };
            write_error(out, &message);
        }
        // A kind of reply a later redis-rs may add: said, not dropped.
        other => write_error(
            out,
            &format!("ERR steadfast proxy: a reply it cannot write: {other:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn args(items: &[&'static str]) -> Vec<Cow<'static, [u8]>> {
        items.iter().map(|s| Cow::Borrowed(s.as_bytes())).collect()
    }

    fn read(bytes: &[u8]) -> Result<Read<'_>, ProtocolError> {
        read_command(bytes, &Limits::default())
    }

    #[test]
    fn a_multibulk_command_is_read_with_its_length_and_a_partial_one_asks_for_more() {
        let bytes = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n";
        assert_eq!(read(bytes), Ok(Read::Command(args(&["GET", "k"]), 20)));
        for cut in 1..20 {
            assert!(
                matches!(read(&bytes[..cut]), Ok(Read::Incomplete { .. })),
                "cut at {cut}"
            );
        }
        assert_eq!(read(b"*0\r\n"), Ok(Read::Skip(4)));
        assert_eq!(read(b"*-1\r\n"), Ok(Read::Skip(5)));
    }

    #[test]
    fn inline_commands_are_split_as_the_server_splits_them() {
        assert_eq!(read(b"PING\r\n"), Ok(Read::Command(args(&["PING"]), 6)));
        assert_eq!(
            read(b"SET k \"a b\\x41\\n\" 'it\\'s'\n"),
            Ok(Read::Command(args(&["SET", "k", "a bA\n", "it's"]), 26))
        );
        assert_eq!(read(b"   \r\n"), Ok(Read::Skip(5)));
        assert_eq!(
            read(b"SET k \"open\r\n"),
            Err(ProtocolError("unbalanced quotes in request".into()))
        );
        assert_eq!(
            read(b"SET k \"a\"b\r\n"),
            Err(ProtocolError("unbalanced quotes in request".into()))
        );
    }

    #[test]
    fn claims_beyond_the_limits_are_refused_on_the_header_before_anything_is_buffered() {
        let limits = Limits::default();
        assert_eq!(
            read(b"*1\r\n$536870913\r\n"),
            Err(ProtocolError("invalid bulk length".into())),
            "one byte over 512 MB"
        );
        // Exactly 512 MB is allowed: the reader asks for it, it does not allocate it.
        assert_eq!(
            read(b"*1\r\n$536870912\r\n"),
            Ok(Read::Incomplete {
                at_least: 16 + 536_870_912 + 2
            })
        );
        assert_eq!(
            read(b"*1048577\r\n"),
            Err(ProtocolError("invalid multibulk length".into()))
        );
        assert_eq!(
            read(b"*x\r\n"),
            Err(ProtocolError("invalid multibulk length".into()))
        );
        assert_eq!(
            read(b"*1\r\n:3\r\n"),
            Err(ProtocolError("expected '$', got ':'".into()))
        );
        assert_eq!(
            read(b"*1\r\n$3\r\nGETX\r\n"),
            Err(ProtocolError("bulk string not terminated by CRLF".into()))
        );
        let long = vec![b'a'; limits.max_line + 1];
        assert_eq!(
            read(&long),
            Err(ProtocolError("too big inline request".into()))
        );
        let mut header = b"*".to_vec();
        header.extend(vec![b'1'; limits.max_line + 1]);
        assert_eq!(
            read(&header),
            Err(ProtocolError("too big mbulk count string".into()))
        );
    }

    #[test]
    fn replies_are_written_in_the_clients_protocol() {
        let write = |value: &Value, protocol| {
            let mut out = Vec::new();
            write_value(&mut out, value, protocol);
            String::from_utf8(out).unwrap()
        };
        let map = Value::Map(vec![(Value::BulkString(b"a".to_vec()), Value::Double(1.5))]);
        assert_eq!(write(&map, Protocol::Resp3), "%1\r\n$1\r\na\r\n,1.5\r\n");
        assert_eq!(
            write(&map, Protocol::Resp2),
            "*2\r\n$1\r\na\r\n$3\r\n1.5\r\n"
        );
        assert_eq!(write(&Value::Nil, Protocol::Resp2), "$-1\r\n");
        assert_eq!(write(&Value::Nil, Protocol::Resp3), "_\r\n");
        assert_eq!(write(&Value::Boolean(true), Protocol::Resp2), ":1\r\n");
        assert_eq!(write(&Value::Boolean(false), Protocol::Resp3), "#f\r\n");
        assert_eq!(
            write(&Value::Double(f64::INFINITY), Protocol::Resp3),
            ",inf\r\n"
        );
        let push = Value::Push {
            kind: redis::PushKind::Message,
            data: vec![
                Value::BulkString(b"ch".to_vec()),
                Value::BulkString(b"hi".to_vec()),
            ],
        };
        assert_eq!(
            write(&push, Protocol::Resp2),
            "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        );
        assert!(write(&push, Protocol::Resp3).starts_with(">3\r\n"));
        let mut out = Vec::new();
        write_error(&mut out, "ERR two\r\nlines");
        assert_eq!(out, b"-ERR two  lines\r\n");
    }

    /// A RESP writer of requests, for the round trip below.
    fn encode(command: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", command.len()).into_bytes();
        for arg in command {
            write_bulk(&mut out, arg);
        }
        out
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_or_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read(&bytes);
        }

        #[test]
        fn a_written_command_reads_back_whole_and_at_no_prefix(
            command in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)
        ) {
            let bytes = encode(&command);
            let command: Vec<Cow<'_, [u8]>> = command.iter().map(|a| Cow::Borrowed(a.as_slice())).collect();
            prop_assert_eq!(read(&bytes), Ok(Read::Command(command, bytes.len())));
            for cut in 0..bytes.len() {
                let is_incomplete = matches!(read(&bytes[..cut]), Ok(Read::Incomplete { .. }));
                prop_assert!(is_incomplete);
            }
        }
    }
}
