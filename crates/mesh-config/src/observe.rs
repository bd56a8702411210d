//! The observability keys of the daemon's `config.toml`: `metrics`,
//! `otlp` and the `[log]` section.

use serde::Deserialize;

/// `[log]` of the daemon's config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Write one JSON line per front-door request. Default: false (true
    /// when `format = "json"`).
    pub requests: Option<bool>,
    /// Where request lines go: a file path (appended to). Default: stderr.
    pub file: Option<String>,
    /// `text` (default) or `json`: the daemon's own log lines as JSON, and
    /// the request log on.
    pub format: Option<toml::Spanned<String>>,
}

/// `[inspect]` of the daemon's config file: the inspector's buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InspectSection {
    /// Capture requests at all. Default: true.
    pub enabled: Option<bool>,
    /// Most requests kept. Default: 10000.
    pub entries: Option<usize>,
    /// Most bytes kept, such as `"64MiB"`. Default: 64 MiB.
    pub bytes: Option<toml::Spanned<String>>,
    /// Keep `Authorization`, `Cookie` and `Set-Cookie` values instead of
    /// masking them. Default: false.
    pub secrets: Option<bool>,
}

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a size; write a number of bytes with an optional unit: 65536, 512KiB, 64MiB, 1GiB"
)]
pub struct SizeError(pub String);

/// A size in bytes: a number with an optional binary unit (`B`, `K`/`KB`/`KiB`,
/// `M`/`MB`/`MiB`, `G`/`GB`/`GiB`; all powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, SizeError> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: usize = number.parse().map_err(|_| SizeError(text.to_owned()))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(SizeError(text.to_owned())),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| SizeError(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 512 kb "), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        let e = parse_size("lots").unwrap_err().to_string();
        assert!(e.contains("64MiB"), "{e}");
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("").is_err());
    }
}
