//! The link journal: per-connection state a caller set with commands (`SELECT`,
//! `CLIENT SETNAME` ...), replayed on every new link.
//!
//! # Behaviour
//! - The command path records a state command once the server accepted it
//!   ([`crate::command`]'s effects name which commands are state commands); the latest command
//!   of each kind wins, and the kinds keep the order they were first set in.
//! - The handshake replays the journal on every new link, after the configured database and
//!   name, in the same round trip as its other questions; a replayed command the new server
//!   refuses fails the attempt (a link in the wrong database is worse than none).
//! - Each change bumps a version; a link remembers the version it was set up with, so a link
//!   made while a change was on its way can be told apart and replaced.

use std::sync::{Arc, Mutex};

use redis::Cmd;

/// Shared by the connector (which replays it) and the command path (which records). Cheap to
/// clone; clones share one journal.
#[derive(Clone, Debug, Default)]
pub(crate) struct Journal(Arc<Mutex<Entries>>);

#[derive(Debug, Default)]
struct Entries {
    version: u64,
    commands: Vec<(String, Cmd)>,
}

impl Journal {
    /// Records `cmd` under `key`, replacing an earlier command with the same key; returns the
    /// journal's new version.
    pub(crate) fn record(&self, key: String, cmd: &Cmd) -> u64 {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entries.version += 1;
        match entries.commands.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = cmd.clone(),
            None => entries.commands.push((key, cmd.clone())),
        }
        entries.version
    }

    /// The version and the commands to replay on a new link.
    pub(crate) fn snapshot(&self) -> (u64, Vec<Cmd>) {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let commands = entries
            .commands
            .iter()
            .map(|(_, cmd)| cmd.clone())
            .collect();
        (entries.version, commands)
    }

    /// Whether the last recorded `CLIENT TRACKING` turned tracking on: every new link then
    /// tracks afresh, and the invalidations its predecessor would have carried are lost.
    pub(crate) fn is_tracking(&self) -> bool {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .commands
            .iter()
            .find(|(key, _)| key == "CLIENT TRACKING")
            .and_then(|(_, cmd)| cmd.args_iter().nth(2))
            .is_some_and(
                |on| matches!(on, redis::Arg::Simple(on) if on.eq_ignore_ascii_case(b"ON")),
            )
    }

    /// The database the last recorded `SELECT` chose, if any.
    pub(crate) fn database(&self) -> Option<i64> {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (_, select) = entries.commands.iter().find(|(key, _)| key == "SELECT")?;
        match select.args_iter().nth(1)? {
            redis::Arg::Simple(index) => std::str::from_utf8(index).ok()?.parse().ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_command_of_a_kind_wins_and_kinds_keep_their_order() {
        let journal = Journal::default();
        journal.record("SELECT".into(), redis::cmd("SELECT").arg(2));
        journal.record(
            "CLIENT SETNAME".into(),
            redis::cmd("CLIENT").arg("SETNAME").arg("a"),
        );
        let version = journal.record("SELECT".into(), redis::cmd("SELECT").arg(5));
        let (at, commands) = journal.snapshot();
        assert_eq!(at, version);
        assert_eq!(at, 3);
        assert_eq!(commands.len(), 2);
        assert_eq!(
            commands[0].get_packed_command(),
            redis::cmd("SELECT").arg(5).get_packed_command()
        );
        assert_eq!(journal.database(), Some(5));
    }

    #[test]
    fn tracking_is_on_while_the_last_tracking_command_said_on() {
        let journal = Journal::default();
        assert!(!journal.is_tracking());
        let on = redis::cmd("CLIENT").arg("TRACKING").arg("on").clone();
        journal.record("CLIENT TRACKING".into(), &on);
        assert!(journal.is_tracking());
        let off = redis::cmd("CLIENT").arg("TRACKING").arg("OFF").clone();
        journal.record("CLIENT TRACKING".into(), &off);
        assert!(!journal.is_tracking());
    }

    #[test]
    fn an_empty_journal_chooses_no_database() {
        assert_eq!(Journal::default().database(), None);
        assert_eq!(Journal::default().snapshot().0, 0);
    }
}
