//! Commands that arrived together with nothing for the proxy to do, kept both as arguments
//! (for the library's plan) and as the bytes the client sent (to be written as they are).

/// Plain commands of one read, in order.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) commands: Vec<Vec<Vec<u8>>>,
    /// The commands as the client encoded them, one after the other.
    encoded: Vec<u8>,
    /// Every command came as a RESP array (not inline): `encoded` can be sent as it is.
    is_encoded: bool,
}

impl Batch {
    /// Adds a command: its arguments and the bytes it came as.
    pub(crate) fn push(&mut self, args: Vec<Vec<u8>>, bytes: &[u8]) {
        if self.commands.is_empty() {
            self.is_encoded = true;
        }
        self.is_encoded &= bytes.first() == Some(&b'*');
        if self.is_encoded {
            self.encoded.extend_from_slice(bytes);
        }
        self.commands.push(args);
    }

    pub(crate) fn len(&self) -> usize {
        self.commands.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Empties the batch: its commands, and their bytes if they can be sent as they are.
    pub(crate) fn take(&mut self) -> (Vec<Vec<Vec<u8>>>, Option<Vec<u8>>) {
        let commands = std::mem::take(&mut self.commands);
        let encoded = std::mem::take(&mut self.encoded);
        (commands, self.is_encoded.then_some(encoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_its_bytes_only_while_every_command_came_as_an_array() {
        let mut batch = Batch::default();
        batch.push(vec![b"PING".to_vec()], b"*1\r\n$4\r\nPING\r\n");
        batch.push(vec![b"PING".to_vec()], b"*1\r\n$4\r\nPING\r\n");
        let (commands, encoded) = batch.take();
        assert_eq!(commands.len(), 2);
        assert_eq!(encoded.unwrap().len(), 28);
        batch.push(vec![b"PING".to_vec()], b"PING\r\n");
        batch.push(vec![b"PING".to_vec()], b"*1\r\n$4\r\nPING\r\n");
        let (commands, encoded) = batch.take();
        assert_eq!(commands.len(), 2);
        assert!(encoded.is_none(), "an inline command is packed anew");
        assert!(batch.is_empty());
    }
}
