//! Plugins, as git and cargo have them: `devmesh <name> ARGS` runs the
//! first `devmesh-<name>` on `PATH` with ARGS, and with `DEVMESH_HOME` and
//! `DEVMESH_SOCKET` (the daemon's control socket) in its environment, so it
//! can talk to the node like the CLI does. A built-in command always wins:
//! clap matches the built-ins before a name reaches a plugin.

use std::{
    collections::BTreeMap,
    ffi::{OsStr, OsString},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;
use mesh_control::SOCKET_NAME;
use serde::Serialize;

use crate::{Failure, cli::Cli, output};

/// The prefix of a plugin's file name.
const PREFIX: &str = "devmesh-";

/// A plugin found on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plugin {
    /// `devmesh <name>` runs it.
    pub name: String,
    pub path: PathBuf,
    /// A built-in command of the same name hides it.
    pub shadowed: bool,
}

/// Whether `name` is a built-in command (or clap's `help`).
fn builtin(name: &str) -> bool {
    name == "help"
        || Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == name || c.get_all_aliases().any(|a| a == name))
}

/// Every `devmesh-<name>` executable in the directories of `path` (a
/// `PATH` value); for each name the first one, as the shell would run it.
pub fn find(path: &OsStr) -> Vec<Plugin> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in std::env::split_paths(path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut here: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let name = file.strip_prefix(PREFIX)?.to_owned();
                (!name.is_empty() && executable(&e.path())).then(|| (name, e.path()))
            })
            .collect();
        here.sort();
        for (name, path) in here {
            found.entry(name).or_insert(path);
        }
    }
    found
        .into_iter()
        .map(|(name, path)| Plugin {
            shadowed: builtin(&name),
            name,
            path,
        })
        .collect()
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn path_var() -> OsString {
    std::env::var_os("PATH").unwrap_or_default()
}

/// `devmesh plugin list [--json]`.
pub fn list(json: bool) -> Result<(), Failure> {
    let plugins = find(&path_var());
    output::emit(json, &plugins, |plugins| {
        if plugins.is_empty() {
            eprintln!("devmesh: no plugins (executables named devmesh-<name>) on PATH");
        }
        for p in plugins {
            let note = if p.shadowed {
                "  (hidden by the built-in command)"
            } else {
                ""
            };
            println!("{:<16} {}{note}", p.name, p.path.display());
        }
    });
    Ok(())
}

/// `devmesh <name> ARGS`: replaces this process with the plugin, so that
/// its exit status and signals are the command's.
pub async fn run(home: &Path, args: Vec<OsString>) -> Result<(), Failure> {
    let Some((name, rest)) = args.split_first() else {
        return Err(Failure::usage(anyhow::anyhow!("no command given")));
    };
    let name = name.to_string_lossy();
    let plugin = find(&path_var())
        .into_iter()
        .find(|p| p.name == name && !p.shadowed)
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "no command `{name}`: not built in, and no `{PREFIX}{name}` on PATH; `devmesh --help` lists the commands, `devmesh plugin list` the plugins"
            ))
        })?;
    let error = std::process::Command::new(&plugin.path)
        .args(rest)
        .env("DEVMESH_HOME", home)
        .env("DEVMESH_SOCKET", home.join(SOCKET_NAME))
        .exec();
    Err(Failure::failed(anyhow::anyhow!(
        "cannot run the plugin {}: {error}",
        plugin.path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_first_executable_of_each_name_on_path_is_the_plugin() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        script(a.path(), "devmesh-hello", 0o755);
        script(b.path(), "devmesh-hello", 0o755);
        script(b.path(), "devmesh-notes", 0o644);
        script(b.path(), "devmesh-status", 0o755);
        script(b.path(), "devmesh-", 0o755);
        script(b.path(), "other", 0o755);
        let path = std::env::join_paths([a.path(), Path::new("/nonexistent"), b.path()]).unwrap();
        let found = find(&path);
        let names: Vec<(&str, bool)> = found
            .iter()
            .map(|p| (p.name.as_str(), p.shadowed))
            .collect();
        assert_eq!(names, [("hello", false), ("status", true)]);
        assert_eq!(found[0].path, a.path().join("devmesh-hello"));
        assert!(builtin("up") && builtin("help") && !builtin("hello"));
    }
}
