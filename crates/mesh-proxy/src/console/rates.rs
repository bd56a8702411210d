//! Request rates and latency quantiles, from the front door's request
//! duration histogram (the metrics the node already keeps).
//!
//! Pure: [`parse`] reads the OpenMetrics text of that one histogram family
//! into cumulative [`Totals`] per [`EdgeKey`] (service, provider, route;
//! methods and codes summed, 5xx counted apart); [`History`] keeps the
//! samples of the last [`WINDOW`] and turns the difference between its
//! oldest and newest into [`EdgeStats`]: requests per second, 5xx per
//! second, and p50/p95 interpolated in the buckets as Prometheus'
//! `histogram_quantile` does.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// How far back rates and quantiles look.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The name of the histogram's bucket lines.
const BUCKET: &str = "devmesh_request_duration_seconds_bucket";

/// Requests from this node's front door to one provider of one service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    /// The service (`unknown` when the request named none).
    pub service: String,
    /// The provider's peer id, empty when none served.
    pub provider: String,
    /// `local`, `direct`, `relayed` or `none`.
    pub route: String,
}

/// Cumulative counts of one edge since the node started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Requests answered.
    pub count: u64,
    /// Of those, answered with a 5xx status.
    pub errors: u64,
    /// Cumulative bucket counts by upper bound (seconds), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
}

impl Totals {
    fn add_bucket(&mut self, le: f64, n: u64) {
        match self.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += n,
            None => {
                self.buckets.push((le, n));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    /// `self - earlier`, bucket by bucket (a bucket `earlier` lacks counts
    /// from zero).
    fn since(&self, earlier: Option<&Totals>) -> Totals {
        let Some(e) = earlier else {
            return self.clone();
        };
        let before = |le: f64| {
            e.buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, c)| *c)
        };
        Totals {
            count: self.count.saturating_sub(e.count),
            errors: self.errors.saturating_sub(e.errors),
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| (le, c.saturating_sub(before(le))))
                .collect(),
        }
    }

    fn merge(&mut self, other: &Totals) {
        self.count += other.count;
        self.errors += other.errors;
        for &(le, n) in &other.buckets {
            self.add_bucket(le, n);
        }
    }
}

/// The totals of every edge in the OpenMetrics text `text` (other
/// families and malformed lines are skipped).
pub fn parse(text: &str) -> BTreeMap<EdgeKey, Totals> {
    let mut out = BTreeMap::<EdgeKey, Totals>::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(BUCKET) else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.rsplit_once("} ")) else {
            continue;
        };
        let Some(labels) = parse_labels(labels) else {
            continue;
        };
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |name: &str| labels.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let (Some(service), Some(le)) = (label("service"), label("le")) else {
            continue;
        };
        let Ok(le) = le.parse::<f64>() else {
            continue;
        };
        let key = EdgeKey {
            service: service.clone(),
            provider: label("provider").cloned().unwrap_or_default(),
            route: label("route").cloned().unwrap_or_default(),
        };
        let n = n as u64;
        let totals = out.entry(key).or_default();
        totals.add_bucket(le, n);
        if le.is_infinite() {
            totals.count += n;
            if label("code").is_some_and(|c| c.starts_with('5')) {
                totals.errors += n;
            }
        }
    }
    out
}

/// `k="v",k2="v2"` as pairs, with OpenMetrics escapes (`\"`, `\\`, `\n`).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() {
            return Some(out);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// The value below which a fraction `q` of the requests in `buckets`
/// took (cumulative counts by upper bound, `+Inf` last), interpolated
/// linearly inside a bucket; a quantile in the `+Inf` bucket is the
/// highest finite bound. `None` without requests.
pub fn quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(le, count) in buckets {
        if count as f64 >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = (count - below) as f64;
            let share = if inside == 0.0 {
                1.0
            } else {
                (rank - below as f64) / inside
            };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

/// Rates and quantiles of one edge (or one service) over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests per second.
    pub rate: f64,
    /// Requests answered with a 5xx status, per second.
    pub errors: f64,
    /// Median duration, milliseconds; `None` without requests.
    pub p50_ms: Option<f64>,
    /// 95th percentile duration, milliseconds; `None` without requests.
    pub p95_ms: Option<f64>,
    /// Requests in the window.
    pub requests: u64,
}

impl Stats {
    fn of(delta: &Totals, seconds: f64) -> Stats {
        let per_second = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let ms = |q| quantile(q, &delta.buckets).map(|s| s * 1000.0);
        Stats {
            rate: per_second(delta.count),
            errors: per_second(delta.errors),
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            requests: delta.count,
        }
    }
}

/// Samples of the totals, the oldest at most [`WINDOW`] before the newest.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<(Instant, BTreeMap<EdgeKey, Totals>)>,
}

impl History {
    /// Adds the totals read at `at`, dropping samples the window no longer
    /// needs (one older than the window is kept as its start).
    pub fn push(&mut self, at: Instant, totals: BTreeMap<EdgeKey, Totals>) {
        self.samples.push_back((at, totals));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| at.duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The seconds between the oldest and newest sample.
    pub fn seconds(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((a, _)), Some((b, _))) => b.duration_since(*a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// What happened in the window on each edge that saw requests.
    fn deltas(&self) -> BTreeMap<EdgeKey, Totals> {
        let (Some((_, first)), Some((_, last))) = (self.samples.front(), self.samples.back())
        else {
            return BTreeMap::new();
        };
        last.iter()
            .map(|(k, t)| (k.clone(), t.since(first.get(k))))
            .filter(|(_, d)| d.count > 0)
            .collect()
    }

    /// Stats of each edge that saw requests in the window.
    pub fn edges(&self) -> Vec<(EdgeKey, Stats)> {
        let seconds = self.seconds();
        self.deltas()
            .into_iter()
            .map(|(k, d)| {
                let s = Stats::of(&d, seconds);
                (k, s)
            })
            .collect()
    }

    /// Stats of each service that saw requests in the window, its edges
    /// summed.
    pub fn services(&self) -> BTreeMap<String, Stats> {
        let seconds = self.seconds();
        let mut by_service = BTreeMap::<String, Totals>::new();
        for (k, d) in self.deltas() {
            by_service.entry(k.service).or_default().merge(&d);
        }
        by_service
            .into_iter()
            .map(|(s, d)| (s, Stats::of(&d, seconds)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
