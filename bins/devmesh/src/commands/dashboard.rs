//! `devmesh dashboard [--print]`: prints the dashboard's URL and opens it
//! in a browser (`$BROWSER`, else `xdg-open`, or `open` on macOS).

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::Context as _;

use crate::{Failure, site};

/// How long a browser launcher may take to fail before it counts as started.
const LAUNCH_WAIT: Duration = Duration::from_secs(3);

/// `devmesh dashboard`.
pub async fn dashboard(home: &Path, print_only: bool) -> Result<(), Failure> {
    let url = site::url(site::front_door(home).await?);
    println!("{url}");
    if print_only {
        return Ok(());
    }
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let argv = launcher(browser.as_deref(), &url);
    open(&argv).await.map_err(|e| {
        Failure::failed(e.context(format!(
            "could not open a browser; open {url} yourself, or set BROWSER to your browser's command"
        )))
    })
}

/// The command that opens `url`: the first entry of `$BROWSER` (entries
/// are separated by `:`; `%s` stands for the URL, else it is appended),
/// or the system's opener.
fn launcher(browser: Option<&str>, url: &str) -> Vec<String> {
    let Some(browser) = browser else {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        return vec![opener.to_owned(), url.to_owned()];
    };
    let first = browser
        .split(':')
        .find(|e| !e.trim().is_empty())
        .unwrap_or(browser);
    let mut argv: Vec<String> = first.split_whitespace().map(str::to_owned).collect();
    if argv.iter().any(|a| a.contains("%s")) {
        for a in &mut argv {
            *a = a.replace("%s", url);
        }
    } else {
        argv.push(url.to_owned());
    }
    argv
}

/// Starts `argv`; fails when it cannot be started or exits with an error
/// within [`LAUNCH_WAIT`] (a browser that keeps running has started).
async fn open(argv: &[String]) -> anyhow::Result<()> {
    let (program, args) = argv.split_first().context("BROWSER is empty")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    match tokio::time::timeout(LAUNCH_WAIT, child.wait()).await {
        Ok(Ok(status)) if !status.success() => anyhow::bail!("{program} exited with {status}"),
        Ok(Err(e)) => Err(e).with_context(|| format!("waiting for {program}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_command_comes_from_browser_or_the_system() {
        let url = "http://devmesh.localhost:7700/";
        let system = launcher(None, url);
        assert_eq!(system[1], url);
        assert_eq!(launcher(Some("firefox"), url), ["firefox", url]);
        assert_eq!(
            launcher(Some("chromium --incognito:firefox"), url),
            ["chromium", "--incognito", url]
        );
        assert_eq!(launcher(Some("w3m %s -o x"), url), ["w3m", url, "-o", "x"]);
    }
}
