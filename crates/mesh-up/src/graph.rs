//! The dependency graph of a project's services (pure).
//!
//! Services start in waves: a wave holds the services whose dependencies
//! are all in earlier waves, so the services of one wave may start
//! together. They stop in the reverse order.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Condition, GraphError};

/// Who depends on whom, checked to be free of cycles and of unknown names.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    dependencies: BTreeMap<String, Vec<(String, Condition)>>,
    dependents: BTreeMap<String, Vec<String>>,
    /// The wave of each service: 0 without dependencies, else one more than
    /// its latest dependency.
    wave: BTreeMap<String, usize>,
}

impl Graph {
    /// Builds the graph from each service and what it depends on.
    ///
    /// A dependency that is not itself a service is
    /// [`GraphError::UnknownDependency`]; a cycle is [`GraphError::Cycle`]
    /// naming it (`api -> db -> api`).
    pub fn new<I, D>(services: I) -> Result<Self, GraphError>
    where
        I: IntoIterator<Item = (String, D)>,
        D: IntoIterator<Item = (String, Condition)>,
    {
        let dependencies: BTreeMap<String, Vec<(String, Condition)>> = services
            .into_iter()
            .map(|(name, deps)| (name, deps.into_iter().collect()))
            .collect();
        let mut dependents: BTreeMap<String, Vec<String>> = dependencies
            .keys()
            .map(|name| (name.clone(), Vec::new()))
            .collect();
        for (service, deps) in &dependencies {
            for (dependency, _) in deps {
                let Some(list) = dependents.get_mut(dependency) else {
                    return Err(GraphError::UnknownDependency {
                        service: service.clone(),
                        dependency: dependency.clone(),
                    });
                };
                list.push(service.clone());
            }
        }
        let mut graph = Self {
            dependencies,
            dependents,
            wave: BTreeMap::new(),
        };
        graph.wave = graph.waves_or_cycle()?;
        Ok(graph)
    }

    /// Depth-first search in name order; returns each service's wave, or
    /// the first cycle met.
    fn waves_or_cycle(&self) -> Result<BTreeMap<String, usize>, GraphError> {
        let mut wave = BTreeMap::new();
        let mut path: Vec<&str> = Vec::new();
        for name in self.dependencies.keys() {
            self.visit(name, &mut path, &mut wave)?;
        }
        Ok(wave)
    }

    fn visit<'a>(
        &'a self,
        name: &'a str,
        path: &mut Vec<&'a str>,
        wave: &mut BTreeMap<String, usize>,
    ) -> Result<usize, GraphError> {
        if let Some(w) = wave.get(name) {
            return Ok(*w);
        }
        if let Some(at) = path.iter().position(|p| *p == name) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(name.to_owned());
            return Err(GraphError::Cycle { cycle });
        }
        path.push(name);
        let mut mine = 0;
        for (dependency, _) in self.dependencies(name) {
            mine = mine.max(self.visit(dependency, path, wave)? + 1);
        }
        path.pop();
        wave.insert(name.to_owned(), mine);
        Ok(mine)
    }

    /// Whether `name` is a service of the graph.
    pub fn contains(&self, name: &str) -> bool {
        self.dependencies.contains_key(name)
    }

    /// What `name` depends on, with the condition it waits for.
    pub fn dependencies(&self, name: &str) -> &[(String, Condition)] {
        self.dependencies.get(name).map_or(&[], Vec::as_slice)
    }

    /// The services that depend on `name`.
    pub fn dependents(&self, name: &str) -> &[String] {
        self.dependents.get(name).map_or(&[], Vec::as_slice)
    }

    /// The services named plus everything they depend on, directly or not;
    /// every service when `names` is empty.
    pub fn select(&self, names: &[String]) -> Result<BTreeSet<String>, GraphError> {
        if names.is_empty() {
            return Ok(self.dependencies.keys().cloned().collect());
        }
        let mut selected = BTreeSet::new();
        let mut todo: Vec<&str> = Vec::new();
        for name in names {
            if !self.contains(name) {
                return Err(GraphError::UnknownService {
                    service: name.clone(),
                });
            }
            todo.push(name);
        }
        while let Some(name) = todo.pop() {
            if selected.insert(name.to_owned()) {
                todo.extend(self.dependencies(name).iter().map(|(d, _)| d.as_str()));
            }
        }
        Ok(selected)
    }

    /// The start order of `selected`: waves whose services may start
    /// together once the waves before them have.
    pub fn start_waves(&self, selected: &BTreeSet<String>) -> Vec<Vec<String>> {
        let mut waves: Vec<Vec<String>> = Vec::new();
        for name in selected {
            let Some(&w) = self.wave.get(name) else {
                continue;
            };
            if waves.len() <= w {
                waves.resize(w + 1, Vec::new());
            }
            waves[w].push(name.clone());
        }
        waves.retain(|w| !w.is_empty());
        waves
    }

    /// The stop order of `selected`: the start waves reversed, dependents
    /// before what they depend on.
    pub fn stop_waves(&self, selected: &BTreeSet<String>) -> Vec<Vec<String>> {
        let mut waves = self.start_waves(selected);
        waves.reverse();
        waves
    }

    /// The start order of `selected` as one list.
    pub fn start_order(&self, selected: &BTreeSet<String>) -> Vec<String> {
        self.start_waves(selected).into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[(&str, Condition)])]) -> Result<Graph, GraphError> {
        Graph::new(edges.iter().map(|(name, deps)| {
            (
                (*name).to_owned(),
                deps.iter()
                    .map(|(d, c)| ((*d).to_owned(), *c))
                    .collect::<Vec<_>>(),
            )
        }))
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn chain() -> Graph {
        use Condition::*;
        graph(&[
            ("web", &[("api", Started)]),
            (
                "api",
                &[("db", Healthy), ("migrate", CompletedSuccessfully)],
            ),
            ("migrate", &[("db", Healthy)]),
            ("db", &[]),
            ("cache", &[]),
            ("docs", &[]),
        ])
        .unwrap()
    }

    #[test]
    fn waves_put_each_service_after_its_dependencies() {
        let g = chain();
        let all = g.select(&[]).unwrap();
        assert_eq!(
            g.start_waves(&all),
            vec![
                vec!["cache".to_owned(), "db".into(), "docs".into()],
                vec!["migrate".into()],
                vec!["api".into()],
                vec!["web".into()],
            ]
        );
        assert_eq!(
            g.stop_waves(&all).concat(),
            ["web", "api", "migrate", "cache", "db", "docs"]
        );
        assert_eq!(g.dependents("db"), ["api", "migrate"]);
        assert_eq!(
            g.dependencies("web"),
            [("api".to_owned(), Condition::Started)]
        );
        assert!(g.dependencies("nope").is_empty());
    }

    #[test]
    fn select_takes_what_the_named_services_need() {
        let g = chain();
        assert_eq!(
            g.select(&["api".into()]).unwrap(),
            names(&["api", "db", "migrate"])
        );
        assert_eq!(
            g.start_order(&g.select(&["migrate".into(), "cache".into()]).unwrap()),
            ["cache", "db", "migrate"]
        );
        assert_eq!(g.select(&[]).unwrap().len(), 6);
        assert_eq!(
            g.select(&["nope".into()]).unwrap_err(),
            GraphError::UnknownService {
                service: "nope".into()
            }
        );
    }

    #[test]
    fn a_cycle_is_an_error_naming_it() {
        use Condition::Started;
        let e = graph(&[("api", &[("db", Started)]), ("db", &[("api", Started)])]).unwrap_err();
        assert_eq!(e.to_string(), "dependency cycle: api -> db -> api");

        let e = graph(&[
            ("a", &[("b", Started)]),
            ("b", &[("c", Started)]),
            ("c", &[("d", Started)]),
            ("d", &[("b", Started)]),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "dependency cycle: b -> c -> d -> b");

        let e = graph(&[("solo", &[("solo", Started)])]).unwrap_err();
        assert_eq!(e.to_string(), "dependency cycle: solo -> solo");
    }

    #[test]
    fn an_unknown_dependency_is_an_error() {
        let e = graph(&[("api", &[("db", Condition::Healthy)])]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service `api` depends on `db`, which the project does not have"
        );
    }

    #[test]
    fn diamond_starts_the_shared_dependency_once() {
        use Condition::Started;
        let g = graph(&[
            ("top", &[("left", Started), ("right", Started)]),
            ("left", &[("base", Started)]),
            ("right", &[("base", Started)]),
            ("base", &[]),
        ])
        .unwrap();
        assert_eq!(
            g.start_order(&g.select(&["top".into()]).unwrap()),
            ["base", "left", "right", "top"]
        );
    }
}
