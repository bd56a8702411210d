//! `devmesh vscode [--write]`: VS Code tasks for the services of the
//! nearest devmesh.toml, in `.vscode/tasks.json` next to it.
//!
//! One background task per service runs `devmesh up <service>`; its
//! problem matcher's `background` patterns are the service's ready line, so
//! a launch configuration whose `preLaunchTask` names it starts debugging
//! once the service is ready. One more task, `devmesh: up`, starts them
//! all and is ready on the line `devmesh up` prints once every service is
//! up. An existing tasks.json (JSON with comments is read) keeps its other
//! tasks and settings; the tasks devmesh made before are replaced.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mesh_config::Project;
use serde_json::{Value, json};

use super::up::{ALL_UP, project_path};
use crate::Failure;

/// The label prefix of the tasks devmesh writes.
const LABEL: &str = "devmesh: ";

/// `devmesh vscode [--write]`: prints the tasks.json it would write, or
/// writes it.
pub fn vscode(write: bool) -> Result<(), Failure> {
    let project = project_path()?;
    let services: Vec<String> = Project::load(&project)?
        .services
        .into_iter()
        .filter(|(_, s)| s.command.is_some() || s.run.is_some())
        .map(|(name, _)| name)
        .collect();
    let path = tasks_path(&project);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("reading {}", path.display()))
                .into());
        }
    };
    let merged = merge(existing.as_deref(), &services).map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "{}: {e}; fix it or move it away, then run `devmesh vscode` again",
            path.display()
        ))
    })?;
    let text = serde_json::to_string_pretty(&merged).context("encoding tasks.json")? + "\n";
    if !write {
        print!("{text}");
        eprintln!(
            "devmesh: this is {} with {} task(s) for devmesh.toml; `devmesh vscode --write` writes it",
            path.display(),
            services.len() + 1
        );
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "devmesh: wrote {}: `{LABEL}up` and one task per service ({})",
        path.display(),
        services.join(", ")
    );
    Ok(())
}

/// `.vscode/tasks.json` next to `project` (a devmesh.toml).
fn tasks_path(project: &Path) -> PathBuf {
    project
        .parent()
        .unwrap_or(Path::new("."))
        .join(".vscode")
        .join("tasks.json")
}

/// The tasks.json of `existing` (JSON with comments) with devmesh's tasks
/// for `services` in place of the ones it made before.
fn merge(existing: Option<&str>, services: &[String]) -> Result<Value, String> {
    let mut file = match existing {
        Some(text) => {
            let value: Value = jsonc_parser::parse_to_serde_value(text, &Default::default())
                .map_err(|e| e.to_string())?;
            match value {
                Value::Null => json!({}),
                Value::Object(_) => value,
                _ => return Err("not a JSON object".into()),
            }
        }
        None => json!({}),
    };
    let object = file.as_object_mut().ok_or("not a JSON object")?;
    object
        .entry("version")
        .or_insert_with(|| Value::from("2.0.0"));
    let tasks = object
        .entry("tasks")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or("`tasks` is not a list")?;
    tasks.retain(|t| {
        !t.get("label")
            .and_then(Value::as_str)
            .is_some_and(|l| l.starts_with(LABEL))
    });
    for service in services {
        tasks.push(task(
            &format!("{LABEL}{service}"),
            &["up", service],
            &format!("^devmesh: {service} ready\\b"),
        ));
    }
    tasks.push(task(
        &format!("{LABEL}up"),
        &["up"],
        &format!("^devmesh: {}$", regex_escape(ALL_UP)),
    ));
    Ok(file)
}

/// A background task running `devmesh ARGS`, active until a line matches
/// `ready`.
fn task(label: &str, args: &[&str], ready: &str) -> Value {
    json!({
        "label": label,
        "type": "process",
        "command": "devmesh",
        "args": args,
        "options": { "cwd": "${workspaceFolder}" },
        "isBackground": true,
        "problemMatcher": {
            "owner": "devmesh",
            "source": "devmesh",
            "pattern": {
                "regexp": "^devmesh: (\\S+ failed: .*)$",
                "message": 1
            },
            "background": {
                "activelyMatches": true,
                "beginsPattern": ready,
                "endsPattern": ready
            }
        }
    })
}

/// `text` with the characters a regular expression treats specially
/// escaped.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(file: &Value) -> Vec<&str> {
        file["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_new_file_has_a_task_per_service_and_one_for_all() {
        let file = merge(None, &["api".into(), "web".into()]).unwrap();
        assert_eq!(file["version"], "2.0.0");
        assert_eq!(
            labels(&file),
            ["devmesh: api", "devmesh: web", "devmesh: up"]
        );
        let api = &file["tasks"][0];
        assert_eq!(api["args"], json!(["up", "api"]));
        assert_eq!(api["isBackground"], true);
        let background = &api["problemMatcher"]["background"];
        assert_eq!(background["beginsPattern"], "^devmesh: api ready\\b");
        assert_eq!(background["endsPattern"], "^devmesh: api ready\\b");
        assert_eq!(
            file["tasks"][2]["problemMatcher"]["background"]["endsPattern"],
            format!("^devmesh: {}$", regex_escape(ALL_UP))
        );
    }

    #[test]
    fn an_existing_file_with_comments_keeps_its_other_tasks_and_settings() {
        let existing = r#"{
  // the team's tasks
  "version": "2.0.0",
  "tasks": [
    { "label": "lint", "type": "shell", "command": "make lint" }, // keep
    { "label": "devmesh: old", "type": "process", "command": "devmesh" },
  ],
  "options": { "env": { "A": "1" } }
}"#;
        let file = merge(Some(existing), &["api".into()]).unwrap();
        assert_eq!(labels(&file), ["lint", "devmesh: api", "devmesh: up"]);
        assert_eq!(file["tasks"][0]["command"], "make lint");
        assert_eq!(file["options"]["env"]["A"], "1");
        let keys: Vec<&String> = file.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["version", "tasks", "options"], "the order is kept");
        assert!(
            merge(Some("[1, 2]"), &[])
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            merge(Some("{ \"tasks\": 3 }"), &[])
                .unwrap_err()
                .contains("`tasks`")
        );
        assert!(merge(Some("{ oops"), &[]).is_err());
    }

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(regex_escape("a.b (c)"), "a\\.b \\(c\\)");
    }
}
