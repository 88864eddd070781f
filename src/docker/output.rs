//! A job's combined stdout and stderr, keeping only the newest bytes.

use std::collections::VecDeque;
use std::sync::Mutex;

/// A job keeps the last 64 KiB of its commands' output.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// Shared between the readers of a running command and anyone asking for the
/// job, so `GET /jobs/{id}` shows output while the job runs.
#[derive(Debug)]
pub struct OutputLog {
    bytes: Mutex<VecDeque<u8>>,
    limit: usize,
}

impl Default for OutputLog {
    fn default() -> Self {
        Self::with_limit(OUTPUT_LIMIT)
    }
}

impl OutputLog {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            bytes: Mutex::new(VecDeque::new()),
            limit,
        }
    }

    /// Starts from text already recorded (a job re-run after a restart).
    pub fn with_text(text: &str) -> Self {
        let log = Self::default();
        log.push(text.as_bytes());
        log
    }

    pub fn push(&self, chunk: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let chunk = &chunk[chunk.len().saturating_sub(self.limit)..];
        let overflow = (bytes.len() + chunk.len()).saturating_sub(self.limit);
        bytes.drain(..overflow);
        bytes.extend(chunk);
    }

    /// Appends one line the gateway itself writes (a command being run, a note).
    pub fn note(&self, line: &str) {
        self.push(format!("{line}\n").as_bytes());
    }

    /// The text, with any character cut by the bound at the start dropped and
    /// other invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let (front, back) = bytes.as_slices();
        let mut all = Vec::with_capacity(bytes.len());
        all.extend_from_slice(front);
        all.extend_from_slice(back);
        let start = all
            .iter()
            .position(|b| (*b as i8) >= -0x40)
            .unwrap_or(all.len());
        String::from_utf8_lossy(&all[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes() {
        let log = OutputLog::with_limit(8);
        log.push(b"abcdef");
        log.push(b"ghij");
        assert_eq!(log.text(), "cdefghij");
        log.push(b"0123456789");
        assert_eq!(log.text(), "23456789");
    }

    #[test]
    fn a_cut_character_is_dropped_not_garbled() {
        let log = OutputLog::with_limit(4);
        log.push("xé€".as_bytes()); // x, 2 bytes, 3 bytes: the cut falls inside é
        assert_eq!(log.text(), "€");
    }
}
