//! The query of `GET /api/requests`: `service`, `status` (a class such as
//! `5xx`), `limit`, `follow` (pure).

use crate::inspect::{self, Filter};

/// Most entries one listing returns.
pub(super) const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Query {
    pub filter: Filter,
    pub limit: Option<usize>,
    pub follow: bool,
}

impl Query {
    /// Parses a query string; unknown keys and bad values are errors that
    /// say what is accepted.
    pub(super) fn parse(query: &str) -> Result<Self, String> {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value)?;
            match key {
                "service" => q.filter.service = Some(value).filter(|v| !v.is_empty()),
                "status" => {
                    q.filter.status_class =
                        Some(inspect::status_class(&value).map_err(|e| e.to_string())?);
                }
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => q.limit = Some(n),
                    _ => {
                        return Err(format!(
                            "limit {value:?} must be a number from 1 to {MAX_LIMIT}"
                        ));
                    }
                },
                "follow" => q.follow = matches!(value.as_str(), "" | "1" | "true"),
                _ => {
                    return Err(format!(
                        "unknown query parameter {key:?}; use service, status, limit or follow"
                    ));
                }
            }
        }
        Ok(q)
    }
}

/// A percent-decoded query value (`+` is a space).
fn decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {value:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_clear_errors() {
        let q = Query::parse("service=my%2Dapi&status=5xx&limit=3").unwrap();
        assert_eq!(q.filter.service.as_deref(), Some("my-api"));
        assert_eq!(
            (q.filter.status_class, q.limit, q.follow),
            (Some(5), Some(3), false)
        );
        assert!(Query::parse("follow=1").unwrap().follow);
        assert_eq!(Query::parse("").unwrap(), Query::default());
        let e = Query::parse("status=500").unwrap_err();
        assert!(e.contains("not a class"), "{e}");
        let e = Query::parse("limit=0").unwrap_err();
        assert!(e.contains("from 1 to"), "{e}");
        let e = Query::parse("colour=red").unwrap_err();
        assert!(e.contains("use service, status"), "{e}");
        assert!(Query::parse("service=%zz").is_err());
    }
}
