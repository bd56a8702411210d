//! The bounded log of each service.

use std::collections::VecDeque;

/// Lines kept per service for `devmesh logs --tail N`.
pub const RING_LINES: usize = 1000;

/// Longest line kept, in bytes; the rest of a longer line is cut off (and
/// the line ends with `…`).
pub const MAX_LINE: usize = 8 * 1024;

/// Which output of the process a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a service's output, as `devmesh up` prints it after the
/// service's `name |` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The service.
    pub service: String,
    /// Where it came from.
    pub stream: Stream,
    /// The text, without its line end.
    pub line: String,
}

/// The latest lines of one service, at most `capacity`.
#[derive(Debug, Clone)]
pub struct Ring {
    lines: VecDeque<LogLine>,
    capacity: usize,
}

impl Default for Ring {
    fn default() -> Self {
        Self::new(RING_LINES)
    }
}

impl Ring {
    /// An empty ring keeping `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(capacity.min(64)),
            capacity: capacity.max(1),
        }
    }

    /// Keeps `line`, dropping the oldest when full.
    pub fn push(&mut self, line: LogLine) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> impl Iterator<Item = &LogLine> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> LogLine {
        LogLine {
            service: "api".into(),
            stream: Stream::Stdout,
            line: n.to_string(),
        }
    }

    #[test]
    fn keeps_the_latest_lines() {
        let mut ring = Ring::new(3);
        for n in 0..5 {
            ring.push(line(n));
        }
        let tail: Vec<_> = ring.tail(10).map(|l| l.line.as_str()).collect();
        assert_eq!(tail, ["2", "3", "4"]);
        let tail: Vec<_> = ring.tail(2).map(|l| l.line.as_str()).collect();
        assert_eq!(tail, ["3", "4"]);
        assert_eq!(ring.tail(0).count(), 0);
    }
}
