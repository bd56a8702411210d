//! `devmesh install`: a marked block in the hosts file that points
//! `<service>.devmesh` at this machine, so browsers reach the front door by
//! service name.
//!
//! Everything outside the block stays byte for byte; the file is replaced
//! atomically (a temporary file in the same directory, renamed over it) and
//! keeps its mode.

use std::{
    io::{ErrorKind, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// First line of the block.
pub const BEGIN: &str = "# BEGIN devmesh (managed by devmesh install; do not edit)";
/// Last line of the block.
pub const END: &str = "# END devmesh";
/// The hosts file unless `DEVMESH_HOSTS_FILE` names another.
pub const DEFAULT_HOSTS: &str = "/etc/hosts";

/// The hosts file to manage.
pub fn path() -> PathBuf {
    std::env::var_os("DEVMESH_HOSTS_FILE")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_HOSTS), PathBuf::from)
}

/// The block for `names`: each as `<name>.devmesh` on 127.0.0.1 and ::1.
pub fn block(names: &[String]) -> String {
    let mut s = format!("{BEGIN}\n");
    for name in names {
        s.push_str(&format!("127.0.0.1 {name}.devmesh\n"));
        s.push_str(&format!("::1 {name}.devmesh\n"));
    }
    s.push_str(END);
    s.push('\n');
    s
}

/// Where the block is in `text`: the byte range of its lines, end of line
/// included.
fn find(text: &[u8]) -> anyhow::Result<Option<std::ops::Range<usize>>> {
    let mut start = None;
    let mut offset = 0;
    for (i, line) in text.split_inclusive(|b| *b == b'\n').enumerate() {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        match start {
            None if content.starts_with(b"# BEGIN devmesh") => start = Some((offset, i + 1)),
            Some(_) if content.starts_with(b"# BEGIN devmesh") => {
                bail!(
                    "line {}: a second `# BEGIN devmesh` before `{END}`; remove the devmesh lines by hand and run `devmesh install` again",
                    i + 1
                )
            }
            Some((begin, _)) if content == END.as_bytes() => {
                return Ok(Some(begin..offset + line.len()));
            }
            _ => {}
        }
        offset += line.len();
    }
    match start {
        Some((_, line)) => bail!(
            "line {line} opens the devmesh block but no `{END}` line closes it; remove the devmesh lines by hand and run `devmesh install` again"
        ),
        None => Ok(None),
    }
}

/// `text` with its devmesh block replaced by `block`, or removed when
/// `block` is `None`; a file without a block gets it at the end.
pub fn apply(text: &[u8], block: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + block.map_or(0, str::len));
    match find(text)? {
        Some(range) => {
            out.extend_from_slice(&text[..range.start]);
            out.extend_from_slice(block.unwrap_or_default().as_bytes());
            out.extend_from_slice(&text[range.end..]);
        }
        None => {
            out.extend_from_slice(text);
            if let Some(block) = block {
                if !out.is_empty() && !out.ends_with(b"\n") {
                    out.push(b'\n');
                }
                out.extend_from_slice(block.as_bytes());
            }
        }
    }
    Ok(out)
}

/// The current block of `text`, if any.
pub fn current(text: &[u8]) -> Option<String> {
    let range = find(text).ok()??;
    Some(String::from_utf8_lossy(&text[range]).into_owned())
}

/// Reads the hosts file.
pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Replaces `path` with `content`, atomically when the file can be
/// replaced, keeping its mode.
pub fn write(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let not_permitted = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
        )
    };
    let hint = || {
        format!(
            "cannot write {}: permission denied; run it as root, keeping your devmesh home: `sudo devmesh --home \"$HOME/.devmesh\" install --yes` (or point DEVMESH_HOSTS_FILE at a file you may write)",
            path.display()
        )
    };
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    let dir = path.parent().unwrap_or(Path::new("."));
    let replace = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".devmesh-hosts-")
            .tempfile_in(dir)?;
        tmp.write_all(content)?;
        tmp.as_file().sync_all()?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    match replace() {
        Ok(()) => Ok(()),
        Err(e) if not_permitted(&e) => Err(anyhow::anyhow!("{}", hint())),
        // A hosts file bind-mounted into a container cannot be replaced,
        // only rewritten.
        Err(e) if e.kind() == ErrorKind::ResourceBusy => {
            std::fs::write(path, content).map_err(|e| {
                if not_permitted(&e) {
                    anyhow::anyhow!("{}", hint())
                } else {
                    anyhow::Error::new(e).context(format!("writing {}", path.display()))
                }
            })
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("replacing {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lists_each_name_on_both_loopbacks() {
        assert_eq!(
            block(&["api".into(), "web".into()]),
            format!(
                "{BEGIN}\n127.0.0.1 api.devmesh\n::1 api.devmesh\n127.0.0.1 web.devmesh\n::1 web.devmesh\n{END}\n"
            )
        );
    }

    #[test]
    fn adds_replaces_and_removes_only_the_block() {
        let original = b"127.0.0.1 localhost\n# keep me  \n::1 localhost";
        let one = block(&["api".into()]);
        let added = apply(original, Some(&one)).unwrap();
        assert_eq!(
            added,
            [&original[..], b"\n", one.as_bytes()].concat(),
            "appended after a newline"
        );
        let mut with_tail = added.clone();
        with_tail.extend_from_slice(b"127.0.0.1 after\r\n");
        let two = block(&["api".into(), "web".into()]);
        let updated = apply(&with_tail, Some(&two)).unwrap();
        assert_eq!(
            updated,
            [&original[..], b"\n", two.as_bytes(), b"127.0.0.1 after\r\n"].concat()
        );
        assert_eq!(apply(&updated, Some(&two)).unwrap(), updated, "idempotent");
        assert_eq!(current(&updated).unwrap(), two);
        let removed = apply(&updated, None).unwrap();
        assert_eq!(removed, [&original[..], b"\n127.0.0.1 after\r\n"].concat());
        assert_eq!(apply(&removed, None).unwrap(), removed);
        assert_eq!(current(&removed), None);
        assert_eq!(apply(b"", Some(&one)).unwrap(), one.as_bytes());
    }

    #[test]
    fn broken_blocks_are_left_alone() {
        let open = format!("a\n{BEGIN}\n127.0.0.1 api.devmesh\n");
        let e = apply(open.as_bytes(), None).unwrap_err();
        assert!(
            e.to_string().contains("line 2 opens the devmesh block"),
            "{e}"
        );
        let twice = format!("{BEGIN}\n{BEGIN}\n{END}\n");
        assert!(apply(twice.as_bytes(), Some("x")).is_err());
    }

    #[test]
    fn write_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left");
    }
}
