//! Colour on a terminal: the words that say a state (healthy, member,
//! relayed, …) in green, yellow or red, only when stdout is a terminal and
//! `NO_COLOR` is not set (<https://no-color.org>). The word itself always
//! stays, so nothing is said by colour alone.

use std::io::IsTerminal as _;

/// Whether stdout gets colour.
pub fn stdout_enabled() -> bool {
    enabled(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// Colour for a terminal unless `NO_COLOR` holds a value.
fn enabled(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

const GREEN: &str = "\u{1b}[32m";
const YELLOW: &str = "\u{1b}[33m";
const RED: &str = "\u{1b}[31m";
const RESET: &str = "\u{1b}[0m";

/// `shown` (the padded form of `word`) in the colour of the state `word`
/// names, or as it is when it names none.
pub fn state(word: &str, shown: &str) -> String {
    let colour = match word {
        "healthy" | "member" | "direct" | "local" | "running" | "ready" => GREEN,
        "relayed" | "pending" | "unknown" | "starting" | "restarting" => YELLOW,
        "unhealthy" | "rejected" | "foreign" | "not-connected" | "failed" | "crashed" => RED,
        _ => return shown.to_owned(),
    };
    // The padding stays outside the colour.
    let pad = &shown[word.len().min(shown.len())..];
    format!("{colour}{word}{RESET}{pad}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(enabled(true, None));
        assert!(enabled(true, Some("".as_ref())));
        assert!(!enabled(true, Some("1".as_ref())));
        assert!(!enabled(false, None));
    }

    #[test]
    fn state_words_are_coloured_and_keep_their_padding() {
        assert_eq!(
            state("healthy", "healthy  "),
            "\u{1b}[32mhealthy\u{1b}[0m  "
        );
        assert_eq!(
            state("unhealthy", "unhealthy"),
            "\u{1b}[31munhealthy\u{1b}[0m"
        );
        assert_eq!(state("api", "api  "), "api  ");
    }
}
