//! Spinners on stderr while a command waits (for the daemon to start, for a
//! namespace to answer). Drawn only on a terminal; elsewhere they are
//! hidden and cost nothing.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner saying `what` is awaited; clear it with `finish_and_clear`
/// before printing.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_owned());
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.enable_steady_tick(Duration::from_millis(100));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}
