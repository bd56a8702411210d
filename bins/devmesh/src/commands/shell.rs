//! `devmesh completions <shell>` and `devmesh man`: generated from the
//! command definitions in `cli.rs` (clap_complete, clap_mangen), so they
//! never drift from the real flags.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::{Failure, cli::Cli};

/// Prints the completion script of `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "devmesh", &mut script);
    print!("{}", String::from_utf8_lossy(&script));
    Ok(())
}

/// Writes `devmesh.1` and a page per command (`devmesh-run.1`, …) into
/// `dir`, or prints `devmesh.1` without one.
pub fn man(dir: Option<&Path>) -> Result<(), Failure> {
    let command = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .context("rendering the man page")?;
        print!("{}", String::from_utf8_lossy(&page));
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    eprintln!(
        "devmesh: wrote the man pages into {}; `man devmesh` finds them when the folder is on MANPATH",
        dir.display()
    );
    Ok(())
}
