//! `devmesh install`: the devmesh block of a hosts file (a temporary file
//! named by `DEVMESH_HOSTS_FILE`, never the system's).

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Output};

use devmesh_tests::{Daemon, backend::Backend, get};

const BEGIN: &str = "# BEGIN devmesh (managed by devmesh install; do not edit)\n";
const END: &str = "# END devmesh\n";

async fn install(node: &Daemon, hosts: &Path, args: &[&str]) -> Output {
    let mut cmd = node.devmesh();
    cmd.env("DEVMESH_HOSTS_FILE", hosts)
        .arg("install")
        .args(args);
    tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("devmesh install did not finish")
        .expect("running devmesh install")
}

fn block(names: &[&str]) -> String {
    let lines: String = names
        .iter()
        .map(|n| format!("127.0.0.1 {n}.devmesh\n::1 {n}.devmesh\n"))
        .collect();
    format!("{BEGIN}{lines}{END}")
}

fn ok(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "devmesh install failed: {stderr}");
    (stdout, stderr)
}

/// Dry run, add, update in place, idempotent re-run, remove: each leaves
/// every byte outside the block as it was.
#[tokio::test(flavor = "multi_thread")]
async fn install_manages_its_block_in_the_hosts_file() {
    let a = Daemon::start().await;
    let (api, web) = tokio::join!(Backend::start("api"), Backend::start("web"));
    a.share_detached("api", api.port(), "1.0.0").await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let original = "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n# the user's comment  \n";
    std::fs::write(&hosts, original).unwrap();
    std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o640)).unwrap();
    let read = || std::fs::read_to_string(&hosts).unwrap();
    let url = format!("http://api.devmesh:{}/", a.proxy.port());

    // Dry run: prints the block, changes nothing.
    let (stdout, stderr) = ok(&install(&a, &hosts, &[]).await);
    assert_eq!(stdout, block(&["api"]));
    assert!(
        stderr.contains("dry run") && stderr.contains(&hosts.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains(&url), "the reminder of the port: {stderr}");
    assert_eq!(read(), original);

    // --yes adds it at the end, keeping the mode.
    let (stdout, stderr) = ok(&install(&a, &hosts, &["--yes"]).await);
    assert_eq!(read(), format!("{original}{}", block(&["api"])));
    assert_eq!(stdout.trim(), url);
    assert!(stderr.contains("added the devmesh block"), "{stderr}");
    let mode = std::fs::metadata(&hosts).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // The name the block points at is one the front door routes.
    let host = format!("api.devmesh:{}", a.proxy.port());
    assert_eq!(get(a.proxy, &host, "/name").await.text(), "api");

    // A line the user adds after the block stays where it is when a new
    // service updates the block in place.
    std::fs::write(&hosts, format!("{}127.0.0.1 after.example\n", read())).unwrap();
    a.share_detached("web", web.port(), "1.0.0").await;
    let (_, stderr) = ok(&install(&a, &hosts, &["--yes"]).await);
    assert!(stderr.contains("updated the devmesh block"), "{stderr}");
    let both = format!(
        "{original}{}127.0.0.1 after.example\n",
        block(&["api", "web"])
    );
    assert_eq!(read(), both);

    // Again: nothing to do, nothing written.
    let (_, stderr) = ok(&install(&a, &hosts, &["--yes"]).await);
    assert!(stderr.contains("is up to date"), "{stderr}");
    assert_eq!(read(), both);

    // --remove alone is a dry run too; with --yes it removes exactly the block.
    let (stdout, stderr) = ok(&install(&a, &hosts, &["--remove"]).await);
    assert_eq!(stdout, block(&["api", "web"]));
    assert!(stderr.contains("would remove"), "{stderr}");
    assert_eq!(read(), both);
    ok(&install(&a, &hosts, &["--remove", "--yes"]).await);
    assert_eq!(read(), format!("{original}127.0.0.1 after.example\n"));
    let (_, stderr) = ok(&install(&a, &hosts, &["--remove", "--yes"]).await);
    assert!(stderr.contains("nothing to remove"), "{stderr}");
}

/// A block someone broke by hand, or no hosts file: a clear error, no change.
#[tokio::test(flavor = "multi_thread")]
async fn install_refuses_broken_blocks_and_missing_files() {
    let a = Daemon::start().await;
    let api = Backend::start("api").await;
    a.share_detached("api", api.port(), "1.0.0").await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let broken = format!("127.0.0.1 localhost\n{BEGIN}127.0.0.1 api.devmesh\n");
    std::fs::write(&hosts, &broken).unwrap();
    let out = install(&a, &hosts, &["--yes"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2 opens the devmesh block but no `# END devmesh`"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), broken);

    let out = install(&a, &dir.path().join("missing"), &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");
}
