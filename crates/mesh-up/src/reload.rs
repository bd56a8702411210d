//! What a new version of `devmesh.toml` changes (pure).

use std::collections::BTreeSet;

use crate::ProjectSpec;

/// The services a reload adds, changes and removes; `devmesh up` says each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diff {
    /// New services: started (when selected).
    pub added: BTreeSet<String>,
    /// Services whose settings changed: restarted.
    pub changed: BTreeSet<String>,
    /// Services no longer in the file: stopped.
    pub removed: BTreeSet<String>,
}

impl Diff {
    /// The services of `old` that `new` adds, changes or removes.
    pub fn between(old: &ProjectSpec, new: &ProjectSpec) -> Self {
        let mut diff = Self::default();
        for (name, spec) in &new.services {
            match old.services.get(name) {
                None => {
                    diff.added.insert(name.clone());
                }
                Some(before) if before != spec => {
                    diff.changed.insert(name.clone());
                }
                Some(_) => {}
            }
        }
        diff.removed = old
            .services
            .keys()
            .filter(|name| !new.services.contains_key(*name))
            .cloned()
            .collect();
        diff
    }

    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Launch, ServiceSpec};

    fn project(services: &[(&str, &str)]) -> ProjectSpec {
        ProjectSpec {
            services: services
                .iter()
                .map(|(name, command)| {
                    let launch = Some(Launch::Shell((*command).to_owned()));
                    ((*name).to_owned(), ServiceSpec::new(*name, launch, "/p"))
                })
                .collect(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn finds_added_changed_and_removed_services() {
        let old = project(&[("api", "serve"), ("db", "postgres"), ("old", "x")]);
        let new = project(&[("api", "serve --fast"), ("db", "postgres"), ("web", "vite")]);
        let diff = Diff::between(&old, &new);
        assert_eq!(diff.added, set(&["web"]));
        assert_eq!(diff.changed, set(&["api"]));
        assert_eq!(diff.removed, set(&["old"]));
        assert!(!diff.is_empty());
    }

    #[test]
    fn any_setting_is_a_change_and_an_equal_file_is_none() {
        let old = project(&[("api", "serve")]);
        assert!(Diff::between(&old, &old.clone()).is_empty());
        let mut new = old.clone();
        if let Some(api) = new.services.get_mut("api") {
            api.env.insert("DEBUG".into(), "1".into());
        }
        assert_eq!(Diff::between(&old, &new).changed, set(&["api"]));
    }
}
