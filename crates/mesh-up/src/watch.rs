//! Which file changes restart which service, and when (pure).
//!
//! [`WatchSet`] maps a changed path to the services that watch it: the
//! `watch` globs of each service, or with `devmesh up --watch` every file
//! below the working directory of a service that has none. Paths that
//! change all the time without being sources (`.git`, `target`,
//! `node_modules`, editor swap files, devmesh.toml itself, which is
//! reloaded instead) restart nothing. [`Debounce`] turns a burst of changes
//! (a save writes several events, `git checkout` hundreds) into one restart
//! once the files have been quiet for a moment.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::{ProjectSpec, WatchError};

/// How long the files of a service must stay quiet before it restarts.
pub const QUIET: Duration = Duration::from_millis(300);

/// Directory names whose contents never restart a service.
const IGNORED_DIRS: [&str; 6] = [
    ".git",
    ".hg",
    "target",
    "node_modules",
    "__pycache__",
    ".devmesh",
];

/// The watched files of one service.
#[derive(Debug, Clone)]
struct Watched {
    service: String,
    globs: GlobSet,
    roots: Vec<PathBuf>,
}

/// The watched files of a project.
#[derive(Debug, Clone, Default)]
pub struct WatchSet {
    config: PathBuf,
    services: Vec<Watched>,
}

impl WatchSet {
    /// The files `project` (loaded from `config`) watches; with `all`
    /// (`--watch`), every file below the working directory of each service
    /// that runs here and has no `watch` of its own. An error names a
    /// pattern that is not a glob.
    pub fn new(project: &ProjectSpec, config: &Path, all: bool) -> Result<Self, WatchError> {
        let mut services = Vec::new();
        for (name, spec) in &project.services {
            if spec.launch.is_none() {
                continue;
            }
            let patterns = if spec.watch.is_empty() && all {
                vec![spec.cwd.join("**").to_string_lossy().into_owned()]
            } else {
                spec.watch.clone()
            };
            if patterns.is_empty() {
                continue;
            }
            let mut globs = GlobSetBuilder::new();
            for pattern in &patterns {
                let glob = Glob::new(pattern).map_err(|source| WatchError::Pattern {
                    service: name.clone(),
                    pattern: pattern.clone(),
                    source,
                })?;
                globs.add(glob);
            }
            let globs = globs.build().map_err(|source| WatchError::Pattern {
                service: name.clone(),
                pattern: patterns.join(", "),
                source,
            })?;
            services.push(Watched {
                service: name.clone(),
                globs,
                roots: patterns.iter().map(|p| static_prefix(p)).collect(),
            });
        }
        Ok(Self {
            config: config.to_owned(),
            services,
        })
    }

    /// The directories to watch recursively: the longest directory of
    /// each pattern without a wildcard, none below another.
    pub fn roots(&self) -> BTreeSet<PathBuf> {
        let all: BTreeSet<PathBuf> = self
            .services
            .iter()
            .flat_map(|w| w.roots.iter().cloned())
            .collect();
        all.iter()
            .filter(|r| !all.iter().any(|o| o != *r && r.starts_with(o)))
            .cloned()
            .collect()
    }

    /// Whether any service watches files.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The services a change of `path` restarts.
    pub fn touched(&self, path: &Path) -> Vec<String> {
        if path == self.config || ignored(path) {
            return Vec::new();
        }
        self.services
            .iter()
            .filter(|w| w.globs.is_match(path))
            .map(|w| w.service.clone())
            .collect()
    }

    /// Every service that watches files (what a lost change may have
    /// touched).
    pub fn all(&self) -> Vec<String> {
        self.services.iter().map(|w| w.service.clone()).collect()
    }
}

/// A path of a build output, a repository or an editor's scratch file.
fn ignored(path: &Path) -> bool {
    let in_ignored_dir = path.components().any(|c| match c {
        Component::Normal(name) => IGNORED_DIRS.iter().any(|d| name == *d),
        _ => false,
    });
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    in_ignored_dir
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.starts_with(".#")
        || name == "4913"
}

/// The directory part of `pattern` before its first wildcard.
fn static_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    for part in Path::new(pattern).components() {
        let text = part.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[', '{']) {
            return prefix;
        }
        prefix.push(part);
    }
    // A pattern without a wildcard names one file: watch its directory.
    prefix.pop();
    prefix
}

/// Keys that fire once they have been quiet for [`QUIET`].
#[derive(Debug, Clone)]
pub struct Debounce<K> {
    quiet: Duration,
    due: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> Default for Debounce<K> {
    fn default() -> Self {
        Self::new(QUIET)
    }
}

impl<K: Ord + Clone> Debounce<K> {
    /// Keys fire after `quiet` without a touch.
    pub fn new(quiet: Duration) -> Self {
        Self {
            quiet,
            due: BTreeMap::new(),
        }
    }

    /// `key` changed at `now`: it fires `quiet` later, unless touched again.
    pub fn touch(&mut self, key: K, now: Instant) {
        self.due.insert(key, now + self.quiet);
    }

    /// When the next key fires.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// The keys due at `now`, forgotten.
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        let due: Vec<K> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            self.due.remove(key);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Launch, ServiceSpec};

    fn project(services: &[(&str, &str, &[&str])]) -> ProjectSpec {
        ProjectSpec {
            services: services
                .iter()
                .map(|(name, cwd, watch)| {
                    let launch = Some(Launch::Shell("serve".into()));
                    let mut spec = ServiceSpec::new(*name, launch, *cwd);
                    spec.watch = watch.iter().map(|w| (*w).to_owned()).collect();
                    ((*name).to_owned(), spec)
                })
                .collect(),
        }
    }

    #[test]
    fn globs_pick_the_services_a_change_restarts() {
        let p = project(&[
            ("api", "/p/api", &["/p/api/src/**/*.js"]),
            ("web", "/p/web", &["/p/web/**"]),
            ("db", "/p", &[]),
        ]);
        let set = WatchSet::new(&p, Path::new("/p/devmesh.toml"), false).unwrap();
        assert_eq!(set.touched(Path::new("/p/api/src/routes/a.js")), ["api"]);
        assert!(set.touched(Path::new("/p/api/src/a.ts")).is_empty());
        assert_eq!(set.touched(Path::new("/p/web/index.html")), ["web"]);
        assert!(set.touched(Path::new("/p/db/data")).is_empty());
        assert!(
            set.touched(Path::new("/p/web/node_modules/x/i.js"))
                .is_empty()
        );
        assert!(set.touched(Path::new("/p/web/.index.html.swp")).is_empty());
        assert!(set.touched(Path::new("/p/web/index.html~")).is_empty());
        let roots: Vec<PathBuf> = set.roots().into_iter().collect();
        assert_eq!(
            roots,
            [PathBuf::from("/p/api/src"), PathBuf::from("/p/web")]
        );
        assert_eq!(set.all(), ["api", "web"]);
    }

    #[test]
    fn watch_all_covers_each_service_without_globs_but_not_devmesh_toml() {
        let p = project(&[("api", "/p", &[]), ("web", "/p/web", &["/p/web/src/*"])]);
        let set = WatchSet::new(&p, Path::new("/p/devmesh.toml"), true).unwrap();
        assert_eq!(set.touched(Path::new("/p/main.py")), ["api"]);
        assert_eq!(set.touched(Path::new("/p/web/src/a.js")), ["api", "web"]);
        assert!(set.touched(Path::new("/p/devmesh.toml")).is_empty());
        assert!(set.touched(Path::new("/p/.git/index")).is_empty());
        assert_eq!(
            set.roots().into_iter().collect::<Vec<_>>(),
            [PathBuf::from("/p")]
        );
        let none = WatchSet::new(&p, Path::new("/p/devmesh.toml"), false).unwrap();
        assert!(none.touched(Path::new("/p/main.py")).is_empty());
    }

    #[test]
    fn a_pattern_without_a_wildcard_watches_its_directory_and_a_bad_one_is_named() {
        assert_eq!(static_prefix("/p/app.py"), PathBuf::from("/p"));
        assert_eq!(static_prefix("/p/src/**"), PathBuf::from("/p/src"));
        assert_eq!(static_prefix("/p/{a,b}/x"), PathBuf::from("/p"));
        let p = project(&[("api", "/p", &["/p/[src"])]);
        let e = WatchSet::new(&p, Path::new("/p/devmesh.toml"), false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("service `api`: watch pattern \"/p/[src\" "),
            "{e}"
        );
    }

    #[test]
    fn a_burst_fires_once_after_it_is_quiet() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut d = Debounce::new(Duration::from_millis(300));
        assert_eq!(d.next(), None);
        d.touch("api", ms(0));
        d.touch("api", ms(200));
        d.touch("web", ms(100));
        assert_eq!(d.next(), Some(ms(400)));
        assert!(d.take_due(ms(399)).is_empty());
        assert_eq!(d.take_due(ms(450)), ["web"]);
        assert_eq!(d.take_due(ms(500)), ["api"]);
        assert!(d.take_due(ms(10_000)).is_empty());
        assert_eq!(d.next(), None);
    }
}
