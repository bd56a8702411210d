//! Processes started by xtask, stopped when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A child process killed on drop.
pub struct Guard(pub Child);

impl Guard {
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Guard> {
        Ok(Guard(
            cmd.spawn().with_context(|| format!("starting {cmd:?}"))?,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first so devmeshd withdraws its services, then make sure.
        let _ = Command::new("kill")
            .arg(self.0.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `devmeshd` arguments of a benchmark node: TCP on loopback, a front door
/// on a free loopback port, no mDNS, the open namespace `namespace` (nodes
/// meet by multiaddr), quiet log.
pub fn loopback_args(namespace: &'static str) -> Vec<&'static str> {
    vec![
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--proxy",
        "127.0.0.1:0",
        "--mdns",
        "false",
        "--namespace",
        namespace,
        "--open",
        "--log",
        "warn",
    ]
}

/// A devmeshd with its own home.
pub struct Daemon {
    pub process: Guard,
    pub home: PathBuf,
    bin: PathBuf,
}

impl Daemon {
    pub fn start(bin: &Path, home: &Path, args: &[&str]) -> anyhow::Result<Daemon> {
        Self::start_in(bin, home, None, args)
    }

    /// Starts devmeshd with `command` (for example `ip netns exec <ns>
    /// devmeshd`, from the NAT lab), or plainly when `None`.
    pub fn start_in(
        bin: &Path,
        home: &Path,
        command: Option<Command>,
        args: &[&str],
    ) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(home)?;
        let log = std::fs::File::create(home.join("xtask-devmeshd.log"))?;
        let mut cmd = command.unwrap_or_else(|| Command::new(bin.join("devmeshd")));
        let process = Guard::spawn(
            cmd.env("DEVMESH_HOME", home)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )?;
        let daemon = Daemon {
            process,
            home: home.to_owned(),
            bin: bin.to_owned(),
        };
        let start = Instant::now();
        loop {
            if home.join("devmeshd.sock").exists()
                && let Ok(s) = daemon.status()
                && s["listen_addrs"].as_array().is_some_and(|a| !a.is_empty())
            {
                return Ok(daemon);
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "devmeshd did not start; its log:\n{}",
                    std::fs::read_to_string(home.join("xtask-devmeshd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn devmesh(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("devmesh"));
        cmd.env("DEVMESH_HOME", &self.home);
        cmd
    }

    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = self.devmesh().args(["status", "--json"]).output()?;
        if !out.status.success() {
            bail!("devmesh status: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn proxy(&self) -> anyhow::Result<String> {
        Ok(self.status()?["proxy_addr"]
            .as_str()
            .context("proxy_addr")?
            .to_owned())
    }

    /// Peak resident memory in KiB since start or the last
    /// [`Daemon::reset_peak_rss`].
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Starts a new peak: the kernel sets VmHWM to the current RSS.
    pub fn reset_peak_rss(&self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.process.pid());
        std::fs::write(&path, "5").with_context(|| format!("writing {path}"))
    }
}
