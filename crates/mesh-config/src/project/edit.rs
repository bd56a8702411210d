//! Adding services to a `devmesh.toml` without losing what a person wrote
//! in it: comments, order and hand-written keys survive (`toml_edit`).

use std::path::Path;

use toml_edit::{DocumentMut, Item, Table, value};

use crate::ConfigError;

/// A service to write as `[services.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewService {
    pub name: String,
    pub port: u16,
    pub version: String,
    /// The container that runs it.
    pub docker: Option<String>,
    /// Its health check (`/healthz`, `tcp`).
    pub health: Option<String>,
}

/// What [`add_services`] did with one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A new `[services.<name>]`.
    Added,
    /// The entry existed; its port, version, docker and health keys were
    /// replaced (`force`), its other keys kept.
    Replaced,
    /// The entry existed and was left as it was.
    Kept,
}

/// `source` (the text of the devmesh.toml at `path`, empty for a new
/// file) with `services` added, and what happened to each. An entry that
/// exists is only changed with `force`.
pub fn add_services(
    path: &Path,
    source: &str,
    services: &[NewService],
    force: bool,
) -> Result<(String, Vec<(String, Outcome)>), ConfigError> {
    let mut doc: DocumentMut = source
        .parse()
        .map_err(|e: toml_edit::TomlError| ConfigError::of_file(path, "", e))?;
    let root = doc.as_table_mut();
    if !root.contains_key("services") {
        let mut table = Table::new();
        table.set_implicit(true);
        root.insert("services", Item::Table(table));
    }
    let table = root["services"].as_table_mut().ok_or_else(|| {
        ConfigError::of_file(
            path,
            "`services` must be a table of [services.<name>] sections",
            std::io::Error::other("not a table"),
        )
    })?;
    let mut outcomes = Vec::new();
    for service in services {
        let outcome = match table.get_mut(&service.name).and_then(Item::as_table_mut) {
            Some(_) if !force => Outcome::Kept,
            Some(existing) => {
                fill(existing, service);
                Outcome::Replaced
            }
            None => {
                let mut new = Table::new();
                fill(&mut new, service);
                table.insert(&service.name, Item::Table(new));
                Outcome::Added
            }
        };
        outcomes.push((service.name.clone(), outcome));
    }
    Ok((doc.to_string(), outcomes))
}

fn fill(table: &mut Table, service: &NewService) {
    table["port"] = value(i64::from(service.port));
    table["version"] = value(&service.version);
    if let Some(docker) = &service.docker {
        table["docker"] = value(docker);
    }
    if let Some(health) = &service.health {
        table["health"] = value(health);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Project;

    fn db() -> NewService {
        NewService {
            name: "db".into(),
            port: 5432,
            version: "15.4.0".into(),
            docker: Some("shop_db_1".into()),
            health: Some("tcp".into()),
        }
    }

    #[test]
    fn new_services_are_added_and_comments_order_and_other_keys_survive() {
        let path = Path::new("/p/devmesh.toml");
        let source = "# the shop\n[services.api]\nport = 3000 # the api\ncommand = \"npm start\"\n\n[services.db]\nport = 1\nenv = { A = \"1\" } # kept\n";
        let (kept, outcomes) = add_services(path, source, &[db()], false).unwrap();
        assert_eq!(outcomes, [("db".to_owned(), Outcome::Kept)]);
        assert_eq!(kept, source, "nothing changes without force");

        let (forced, outcomes) = add_services(path, source, &[db()], true).unwrap();
        assert_eq!(outcomes, [("db".to_owned(), Outcome::Replaced)]);
        assert!(
            forced.starts_with("# the shop\n[services.api]\nport = 3000 # the api\n"),
            "{forced}"
        );
        assert!(forced.contains("env = { A = \"1\" } # kept"), "{forced}");
        let project = Project::parse(path, &forced).unwrap();
        assert_eq!(project.services["db"].port, Some(5432));
        assert_eq!(project.services["db"].docker.as_deref(), Some("shop_db_1"));

        let web = NewService {
            name: "web".into(),
            port: 8080,
            version: "0.0.0".into(),
            docker: Some("web".into()),
            health: None,
        };
        let (added, outcomes) = add_services(path, "", &[web], false).unwrap();
        assert_eq!(outcomes, [("web".to_owned(), Outcome::Added)]);
        assert_eq!(
            added,
            "[services.web]\nport = 8080\nversion = \"0.0.0\"\ndocker = \"web\"\n"
        );
        Project::parse(path, &added).unwrap();
        assert!(add_services(path, "services = 3\n", &[db()], false).is_err());
    }
}
