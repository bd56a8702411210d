//! Making the operating system and browsers trust the CA: what to run on
//! this machine, and doing it where devmesh can.
//!
//! For tests and packaging, two environment variables replace the system
//! store: [`STORE_DIR_ENV`] (the folder the certificate is copied into) and
//! [`UPDATE_COMMAND_ENV`] (the shell command run after copying; empty for
//! none).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Serialize;

use crate::StepError;

/// Folder of the system trust store, instead of the one of this OS.
pub const STORE_DIR_ENV: &str = "DEVMESH_CA_STORE_DIR";
/// Command that refreshes the system trust store after the copy (run with
/// `sh -c`), instead of `update-ca-certificates` or `update-ca-trust`.
pub const UPDATE_COMMAND_ENV: &str = "DEVMESH_UPDATE_CA_COMMAND";

const MAC_KEYCHAIN: &str = "/Library/Keychains/System.keychain";

/// The system trust store of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemStore {
    /// A folder of certificates and a command that refreshes the bundle
    /// (Debian/Ubuntu, Fedora/RHEL, or the environment override).
    Dir {
        label: String,
        dir: PathBuf,
        update: Option<String>,
    },
    /// The macOS system keychain.
    MacKeychain,
    /// Not known: the instructions list the common ones.
    Unknown,
}

/// Where the CA can be trusted on this machine.
#[derive(Debug, Clone)]
pub struct Plan {
    pub system: SystemStore,
    /// NSS databases found (Chrome/Chromium on Linux, Firefox profiles).
    pub nss_dbs: Vec<PathBuf>,
    /// The `certutil` program (Debian `libnss3-tools`), when installed.
    pub certutil: Option<PathBuf>,
}

/// One way to trust the CA, with the commands a person runs.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub target: String,
    pub commands: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What `--yes` did for one target.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub target: String,
    pub ok: bool,
    pub detail: String,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Plan {
    /// Looks at this machine: environment overrides, OS, `certutil` and
    /// the NSS databases under `home` (the user's home directory).
    pub fn detect(home: Option<&Path>) -> Plan {
        let system = if let Some(dir) = std::env::var_os(STORE_DIR_ENV) {
            SystemStore::Dir {
                label: format!("system trust store ({STORE_DIR_ENV})"),
                dir: dir.into(),
                update: std::env::var(UPDATE_COMMAND_ENV)
                    .ok()
                    .filter(|c| !c.trim().is_empty()),
            }
        } else if cfg!(target_os = "macos") {
            SystemStore::MacKeychain
        } else if Path::new("/usr/local/share/ca-certificates").is_dir()
            || find_program("update-ca-certificates").is_some()
        {
            SystemStore::Dir {
                label: "system trust store (Debian/Ubuntu)".into(),
                dir: "/usr/local/share/ca-certificates".into(),
                update: Some("update-ca-certificates".into()),
            }
        } else if Path::new("/etc/pki/ca-trust/source/anchors").is_dir() {
            SystemStore::Dir {
                label: "system trust store (Fedora/RHEL)".into(),
                dir: "/etc/pki/ca-trust/source/anchors".into(),
                update: Some("update-ca-trust".into()),
            }
        } else {
            SystemStore::Unknown
        };
        let mut nss_dbs = Vec::new();
        if let Some(home) = home {
            let chrome = home.join(".pki/nssdb");
            if chrome.join("cert9.db").is_file() {
                nss_dbs.push(chrome);
            }
            for profiles in [
                home.join(".mozilla/firefox"),
                home.join("snap/firefox/common/.mozilla/firefox"),
            ] {
                let Ok(entries) = fs::read_dir(&profiles) else {
                    continue;
                };
                let mut found: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.join("cert9.db").is_file())
                    .collect();
                found.sort();
                nss_dbs.extend(found);
            }
        }
        Plan {
            system,
            nss_dbs,
            certutil: find_program("certutil"),
        }
    }
}

/// File name of the CA in a system store.
pub fn store_file_name(short_id: &str) -> String {
    format!("devmesh-{short_id}.crt")
}

/// Nickname of the CA in NSS databases.
pub fn nss_nickname(short_id: &str) -> String {
    format!("devmesh-{short_id}")
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn certutil_add(db: &str, short_id: &str, ca: &Path) -> String {
    format!(
        "certutil -d sql:{db} -A -t C,, -n {} -i {}",
        nss_nickname(short_id),
        shell_quote(ca)
    )
}

/// What a person runs to trust the CA at `ca` (its certificate file);
/// `port` is the front door's, when its node runs.
pub fn instructions(plan: &Plan, ca: &Path, short_id: &str, port: Option<u16>) -> Vec<Step> {
    let file = store_file_name(short_id);
    let q = shell_quote(ca);
    let mut steps = Vec::new();
    match &plan.system {
        SystemStore::Dir { label, dir, update } => {
            let dest = shell_quote(&dir.join(&file));
            let mut commands = vec![format!("sudo cp {q} {dest}")];
            commands.extend(update.iter().map(|u| format!("sudo {u}")));
            steps.push(Step {
                target: label.clone(),
                commands,
                note: None,
            });
        }
        SystemStore::MacKeychain => steps.push(Step {
            target: "macOS system keychain".into(),
            commands: vec![format!(
                "sudo security add-trusted-cert -d -r trustRoot -k {MAC_KEYCHAIN} {q}"
            )],
            note: None,
        }),
        SystemStore::Unknown => {
            steps.push(Step {
                target: "system trust store (Debian/Ubuntu)".into(),
                commands: vec![
                    format!("sudo cp {q} /usr/local/share/ca-certificates/{file}"),
                    "sudo update-ca-certificates".into(),
                ],
                note: None,
            });
            steps.push(Step {
                target: "system trust store (Fedora/RHEL)".into(),
                commands: vec![
                    format!("sudo cp {q} /etc/pki/ca-trust/source/anchors/{file}"),
                    "sudo update-ca-trust".into(),
                ],
                note: None,
            });
        }
    }
    if !cfg!(target_os = "macos") {
        let mut commands: Vec<String> = plan
            .nss_dbs
            .iter()
            .map(|db| certutil_add(&shell_quote(db), short_id, ca))
            .collect();
        if commands.is_empty() {
            commands.push(certutil_add("$HOME/.pki/nssdb", short_id, ca));
        }
        steps.push(Step {
            target: "Chrome/Chromium and Firefox (NSS databases)".into(),
            commands,
            note: Some(match plan.certutil {
                Some(_) => "browsers read their own NSS database, not the system store; restart the browser afterwards".into(),
                None => "needs certutil (Debian/Ubuntu: apt install libnss3-tools; Fedora: dnf install nss-tools); the database appears after the browser's first start".into(),
            }),
        });
    }
    steps.push(Step {
        target: "curl".into(),
        commands: vec![format!(
            "curl --cacert {q} https://api.localhost:{}/",
            port.unwrap_or(7700)
        )],
        note: Some(match port {
            Some(_) => "or trust it system-wide above; the port is this node's front door".into(),
            None => "or trust it system-wide above; 7700 is the default front-door port (devmeshd is not running)".into(),
        }),
    });
    steps.push(Step {
        target: "Node.js".into(),
        commands: vec![format!("export NODE_EXTRA_CA_CERTS={q}")],
        note: None,
    });
    steps
}

fn run_shell(command: &str) -> Result<(), StepError> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .map_err(|source| StepError::Spawn {
            command: command.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(StepError::Failed {
            command: command.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The outcome of the step on `target`: `done` on success, else the
/// error's text.
fn outcome(target: String, result: Result<String, StepError>) -> Outcome {
    match result {
        Ok(detail) => Outcome {
            target,
            ok: true,
            detail,
        },
        Err(e) => Outcome {
            target,
            ok: false,
            detail: crate::error::chain(&e),
        },
    }
}

/// Trusts the CA at `ca` wherever this process can: the system store when
/// its folder is writable, every NSS database when `certutil` is there.
pub fn install(plan: &Plan, ca: &Path, short_id: &str) -> Vec<Outcome> {
    let mut out = Vec::new();
    match &plan.system {
        SystemStore::Dir { label, dir, update } => {
            let dest = dir.join(store_file_name(short_id));
            let result = fs::copy(ca, &dest)
                .map_err(|error| StepError::Copy {
                    path: dest.clone(),
                    error,
                })
                .and_then(|_| match update {
                    Some(cmd) => run_shell(cmd)
                        .map(|()| format!("copied to {} and ran {cmd}", dest.display())),
                    None => Ok(format!("copied to {}", dest.display())),
                });
            out.push(outcome(label.clone(), result));
        }
        SystemStore::MacKeychain => {
            let cmd = format!(
                "security add-trusted-cert -d -r trustRoot -k {MAC_KEYCHAIN} {}",
                shell_quote(ca)
            );
            let result = run_shell(&cmd)
                .map(|()| format!("ran {cmd}"))
                .map_err(|e| StepError::NeedsAdmin(Box::new(e)));
            out.push(outcome("macOS system keychain".into(), result));
        }
        SystemStore::Unknown => out.push(Outcome {
            target: "system trust store".into(),
            ok: false,
            detail: format!(
                "this system's trust store is unknown to devmesh; add {} to it by hand",
                ca.display()
            ),
        }),
    }
    if plan.certutil.is_some() {
        for db in &plan.nss_dbs {
            let cmd = certutil_add(&shell_quote(db), short_id, ca);
            let target = format!("NSS database {}", db.display());
            let result = run_shell(&cmd).map(|()| format!("added as {}", nss_nickname(short_id)));
            out.push(outcome(target, result));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_plan(dir: &Path, update: Option<&str>) -> Plan {
        Plan {
            system: SystemStore::Dir {
                label: "test store".into(),
                dir: dir.to_owned(),
                update: update.map(str::to_owned),
            },
            nss_dbs: vec![],
            certutil: None,
        }
    }

    #[test]
    fn instructions_name_the_store_file_and_curl() {
        let plan = dir_plan(
            Path::new("/usr/local/share/ca-certificates"),
            Some("update-ca-certificates"),
        );
        let steps = instructions(
            &plan,
            Path::new("/home/me/.devmesh/ca/ca.pem"),
            "0a1b2c3d",
            Some(18080),
        );
        assert_eq!(
            steps[0].commands,
            [
                "sudo cp /home/me/.devmesh/ca/ca.pem /usr/local/share/ca-certificates/devmesh-0a1b2c3d.crt",
                "sudo update-ca-certificates"
            ]
        );
        let all: Vec<&String> = steps.iter().flat_map(|s| &s.commands).collect();
        assert!(all.contains(
            &&"curl --cacert /home/me/.devmesh/ca/ca.pem https://api.localhost:18080/".to_owned()
        ));
        assert!(
            all.iter()
                .any(|c| c
                    .contains("certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n devmesh-0a1b2c3d"))
        );
        let unknown = Plan {
            system: SystemStore::Unknown,
            nss_dbs: vec![],
            certutil: None,
        };
        let steps = instructions(&unknown, Path::new("/x y/ca.pem"), "0a1b2c3d", None);
        assert!(
            steps[1]
                .commands
                .contains(&"sudo update-ca-trust".to_owned())
        );
        assert!(steps[0].commands[0].contains("'/x y/ca.pem'"));
    }

    #[test]
    fn install_copies_runs_the_update_and_reports_failures() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca.pem");
        fs::write(&ca, "PEM").unwrap();
        let store = tmp.path().join("store");
        fs::create_dir(&store).unwrap();
        let marker = tmp.path().join("updated");
        let plan = dir_plan(&store, Some(&format!("touch {}", marker.display())));
        let done = install(&plan, &ca, "0a1b2c3d");
        assert!(done[0].ok, "{:?}", done[0]);
        assert_eq!(
            fs::read_to_string(store.join("devmesh-0a1b2c3d.crt")).unwrap(),
            "PEM"
        );
        assert!(marker.exists());
        let failing = dir_plan(&store, Some("exit 3"));
        let done = install(&failing, &ca, "0a1b2c3d");
        assert!(!done[0].ok);
        assert!(done[0].detail.contains("exit 3"), "{}", done[0].detail);
        let missing = dir_plan(&tmp.path().join("nope"), None);
        let done = install(&missing, &ca, "0a1b2c3d");
        assert!(!done[0].ok);
        assert!(
            done[0].detail.contains("cannot write"),
            "{}",
            done[0].detail
        );
    }
}
