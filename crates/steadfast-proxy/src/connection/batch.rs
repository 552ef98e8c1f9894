//! Commands that arrived together with nothing for the proxy to do, kept both as commands
//! (for the library's plan) and as the bytes the client sent (to be written as they are).

/// Plain commands of one read, in order.
#[derive(Default)]
pub(crate) struct Batch {
    commands: Vec<redis::Cmd>,
    /// The commands as the client encoded them, one after the other.
    encoded: Vec<u8>,
    /// Every command came as a RESP array (not inline): `encoded` can be sent as it is.
    is_encoded: bool,
}

impl Batch {
    /// Adds a command and the bytes it came as.
    pub(crate) fn push(&mut self, cmd: redis::Cmd, bytes: &[u8]) {
        if self.commands.is_empty() {
            self.is_encoded = true;
        }
        self.is_encoded &= bytes.first() == Some(&b'*');
        if self.is_encoded {
            self.encoded.extend_from_slice(bytes);
        }
        self.commands.push(cmd);
    }

    pub(crate) fn len(&self) -> usize {
        self.commands.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The commands (to be taken), and their bytes if they can be sent as they are.
    pub(crate) fn parts(&mut self) -> (&mut Vec<redis::Cmd>, Option<&[u8]>) {
        (
            &mut self.commands,
            self.is_encoded.then_some(self.encoded.as_slice()),
        )
    }

    /// Empties the batch, keeping room for the next unless it grew past `keep` bytes.
    pub(crate) fn clear(&mut self, keep: usize) {
        self.commands.clear();
        self.encoded.clear();
        if self.encoded.capacity() > keep {
            self.encoded = Vec::new();
        }
        if self.commands.capacity() * std::mem::size_of::<redis::Cmd>() > keep {
            self.commands = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_its_bytes_only_while_every_command_came_as_an_array() {
        let mut batch = Batch::default();
        batch.push(redis::cmd("PING"), b"*1\r\n$4\r\nPING\r\n");
        batch.push(redis::cmd("PING"), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.parts().1.unwrap().len(), 28);
        batch.clear(1024);
        batch.push(redis::cmd("PING"), b"PING\r\n");
        batch.push(redis::cmd("PING"), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(batch.len(), 2);
        assert!(
            batch.parts().1.is_none(),
            "an inline command is packed anew"
        );
        batch.clear(1024);
        assert!(batch.is_empty());
    }

    #[test]
    fn a_cleared_batch_keeps_its_room_unless_it_grew_past_the_bound() {
        let mut batch = Batch::default();
        batch.push(redis::cmd("GET"), b"*1\r\n$3\r\nGET\r\n");
        batch.clear(1024);
        assert!(batch.encoded.capacity() > 0, "room kept for the next read");
        batch.push(redis::cmd("SET"), &[b'*'; 4096]);
        batch.clear(1024);
        assert_eq!(
            batch.encoded.capacity(),
            0,
            "a large batch's room is given back"
        );
    }
}
