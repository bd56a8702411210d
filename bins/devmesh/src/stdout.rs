//! Results on stdout that end the CLI quietly when their reader has gone
//! (`devmesh status | true`, `devmesh peers --json | head -1`).
//!
//! `print!` and `println!` in this crate are the macros below: std's panic
//! on a closed pipe (exit code 101, a panic message); these exit with code
//! 0 and say nothing, as `cat` or `ls` would if they ignored SIGPIPE.

/// `println!` that ends the process quietly on a closed stdout.
macro_rules! println {
    () => {
        $crate::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that ends the process quietly on a closed stdout.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

/// Writes `args` to stdout. When the reader has closed the pipe, exits at
/// once with code 0; on any other write error, says so and exits with 1.
pub fn write(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        closed(&e);
    }
}

/// Flushes stdout (before the process exits with data still buffered).
pub fn flush() {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().flush() {
        closed(&e);
    }
}

fn closed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("devmesh: writing to stdout: {e}");
    std::process::exit(1);
}
