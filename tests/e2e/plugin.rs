//! Plugins: `devmesh <name>` runs `devmesh-<name>` from PATH with its
//! arguments, the node's home and control socket; built-ins win.

use std::os::unix::fs::PermissionsExt as _;

use devmesh_tests::bin;

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_on_path_gets_its_arguments_and_the_node_and_cannot_shadow_a_builtin() {
    let plugins = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    for (name, body) in [
        (
            "devmesh-hello",
            "printf '%s|' \"$@\"; echo; echo \"home=$DEVMESH_HOME\"; echo \"socket=$DEVMESH_SOCKET\"; exit 7",
        ),
        ("devmesh-stop", "echo plugin-stop; exit 0"),
    ] {
        let path = plugins.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = std::env::join_paths(
        std::iter::once(plugins.path().to_owned())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let devmesh = |args: &[&str]| {
        let mut c = tokio::process::Command::new(bin("devmesh"));
        c.env("DEVMESH_HOME", home.path())
            .env("PATH", &path)
            .args(args);
        c
    };

    let out = devmesh(&["hello", "one", "two words", "--flag"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the plugin's exit status: {stdout}"
    );
    assert_eq!(
        stdout,
        format!(
            "one|two words|--flag|\nhome={home}\nsocket={home}/devmeshd.sock\n",
            home = home.path().display()
        )
    );

    let out = devmesh(&["plugin", "list", "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hello = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello")
        .expect("hello listed");
    assert_eq!(hello["shadowed"], false);
    assert_eq!(
        hello["path"].as_str().unwrap(),
        plugins.path().join("devmesh-hello").to_str().unwrap()
    );
    let stop = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "stop");
    assert_eq!(stop.unwrap()["shadowed"], true);

    // The built-in `stop` runs, not the plugin (no daemon: it says so).
    let out = devmesh(&["stop", "x"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("plugin-stop"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("devmeshd is not running"));
    let out = devmesh(&["plugin", "list"]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("stop") && l.ends_with("(hidden by the built-in command)")),
        "{text}"
    );

    let out = devmesh(&["nosuchthing"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "devmesh: no command `nosuchthing`: not built in, and no `devmesh-nosuchthing` on PATH"
        ),
        "{stderr}"
    );
}
