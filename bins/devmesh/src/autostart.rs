//! `devmesh daemon install|uninstall`: a systemd user unit (Linux) or a
//! launchd agent (macOS) that starts devmeshd at login and restarts it when
//! it dies, so the node and its restored shares come back by themselves.
//! Pure: the file's place and text; the command writes and removes it.

use std::path::{Path, PathBuf};

/// Name of the systemd user unit.
pub const UNIT_NAME: &str = "devmeshd.service";
/// Label of the launchd agent.
pub const AGENT_LABEL: &str = "dev.devmesh.devmeshd";

/// Which service manager gets the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    /// The one of this OS.
    pub fn here() -> Self {
        if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }

    /// Where the file goes: `$XDG_CONFIG_HOME/systemd/user/` (else
    /// `~/.config/systemd/user/`), or `~/Library/LaunchAgents/`.
    pub fn path(self, user_home: &Path, xdg_config: Option<&Path>) -> PathBuf {
        match self {
            Self::Systemd => xdg_config
                .map_or_else(|| user_home.join(".config"), Path::to_path_buf)
                .join("systemd/user")
                .join(UNIT_NAME),
            Self::Launchd => user_home
                .join("Library/LaunchAgents")
                .join(format!("{AGENT_LABEL}.plist")),
        }
    }

    /// The file that runs `exe --home <home>`, its log appended to
    /// `<home>/devmeshd.log` (where `devmesh logs --daemon` reads it).
    pub fn file(self, exe: &Path, home: &Path) -> String {
        let (exe, home) = (exe.display(), home.display());
        match self {
            Self::Systemd => format!(
                "[Unit]\n\
                 Description=devmesh node (devmeshd)\n\
                 Documentation=https://github.com/devmesh/devmesh\n\
                 After=network-online.target\n\
                 \n\
                 [Service]\n\
                 ExecStart={exe} --home {home}\n\
                 Restart=on-failure\n\
                 RestartSec=1\n\
                 StandardOutput=append:{home}/devmeshd.log\n\
                 StandardError=append:{home}/devmeshd.log\n\
                 \n\
                 [Install]\n\
                 WantedBy=default.target\n"
            ),
            Self::Launchd => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
                 <plist version=\"1.0\">\n\
                 <dict>\n\
                 \x20 <key>Label</key><string>{AGENT_LABEL}</string>\n\
                 \x20 <key>ProgramArguments</key>\n\
                 \x20 <array><string>{exe}</string><string>--home</string><string>{home}</string></array>\n\
                 \x20 <key>RunAtLoad</key><true/>\n\
                 \x20 <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
                 \x20 <key>StandardOutPath</key><string>{home}/devmeshd.log</string>\n\
                 \x20 <key>StandardErrorPath</key><string>{home}/devmeshd.log</string>\n\
                 </dict>\n\
                 </plist>\n"
            ),
        }
    }

    /// What to run to start it now and at every login.
    pub fn enable_hint(self, path: &Path) -> String {
        match self {
            Self::Systemd => format!(
                "systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}"
            ),
            Self::Launchd => format!("launchctl load -w {}", path.display()),
        }
    }

    /// What to run to stop it before the file is removed.
    pub fn disable_hint(self, path: &Path) -> String {
        match self {
            Self::Systemd => format!("systemctl --user disable --now {UNIT_NAME}"),
            Self::Launchd => format!("launchctl unload -w {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_daemon_of_the_home_and_restarts_it() {
        let path = Manager::Systemd.path(Path::new("/home/me"), None);
        assert_eq!(
            path,
            Path::new("/home/me/.config/systemd/user/devmeshd.service")
        );
        let xdg = Manager::Systemd.path(Path::new("/home/me"), Some(Path::new("/x")));
        assert_eq!(xdg, Path::new("/x/systemd/user/devmeshd.service"));
        let unit = Manager::Systemd.file(
            Path::new("/usr/bin/devmeshd"),
            Path::new("/home/me/.devmesh"),
        );
        assert!(
            unit.contains("\nExecStart=/usr/bin/devmeshd --home /home/me/.devmesh\n"),
            "{unit}"
        );
        assert!(unit.contains("\nRestart=on-failure\n"));
        assert!(unit.contains("\nWantedBy=default.target\n"));
        let plist =
            Manager::Launchd.file(Path::new("/opt/devmeshd"), Path::new("/Users/me/.devmesh"));
        assert!(plist.contains("<string>/opt/devmeshd</string><string>--home</string><string>/Users/me/.devmesh</string>"), "{plist}");
        assert_eq!(
            Manager::Launchd.path(Path::new("/Users/me"), None),
            Path::new("/Users/me/Library/LaunchAgents/dev.devmesh.devmeshd.plist")
        );
    }
}
