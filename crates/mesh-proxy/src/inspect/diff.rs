//! The diff of two responses, as a replay shows it: each response written
//! as text (status line, headers sorted by name, a blank line, the body
//! prefix; binary bodies in base64), then a unified diff of the lines.
//! Headers that differ on every request (`date`, `x-devmesh-trace-id`)
//! are left out.

use similar::TextDiff;

use super::BodyPrefix;

/// Headers no two responses share, left out of the diff.
const ALWAYS_DIFFERENT: [&str; 2] = ["date", "x-devmesh-trace-id"];

/// A response as diffed.
pub fn render(status: u16, headers: &[(String, String)], body: &BodyPrefix) -> String {
    let mut out = format!("HTTP {status}\n");
    let mut sorted: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| !ALWAYS_DIFFERENT.iter().any(|d| k.eq_ignore_ascii_case(d)))
        .collect();
    sorted.sort();
    for (k, v) in sorted {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push('\n');
    match body.text() {
        Some(text) => out.push_str(text),
        None => {
            out.push_str("(binary, base64) ");
            out.push_str(&data_encoding::BASE64.encode(&body.bytes));
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    if body.truncated {
        out.push_str(&format!("… ({} bytes in all)\n", body.total));
    }
    out
}

/// The unified diff from `original` to `replayed`; empty when they are
/// the same.
pub fn unified(original: &str, replayed: &str) -> String {
    TextDiff::from_lines(original, replayed)
        .unified_diff()
        .context_radius(3)
        .header("original", "replayed")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> BodyPrefix {
        BodyPrefix {
            bytes: text.to_owned().into(),
            truncated: false,
            total: text.len() as u64,
        }
    }

    #[test]
    fn responses_render_sorted_without_the_always_different_headers() {
        let headers = vec![
            ("x-b".to_owned(), "2".to_owned()),
            ("date".to_owned(), "now".to_owned()),
            ("a".to_owned(), "1".to_owned()),
            ("x-devmesh-trace-id".to_owned(), "abc".to_owned()),
        ];
        assert_eq!(
            render(200, &headers, &body("hi")),
            "HTTP 200\na: 1\nx-b: 2\n\nhi\n"
        );
        let binary = BodyPrefix {
            bytes: vec![0xff].into(),
            truncated: true,
            total: 70_000,
        };
        assert_eq!(
            render(204, &[], &binary),
            "HTTP 204\n\n(binary, base64) /w==\n… (70000 bytes in all)\n"
        );
    }

    #[test]
    fn the_diff_is_unified_and_empty_when_nothing_changed() {
        let a = render(200, &[("x-version".into(), "1.0.0".into())], &body("v1\n"));
        let b = render(200, &[("x-version".into(), "2.0.0".into())], &body("v2\n"));
        let d = unified(&a, &b);
        assert!(d.starts_with("--- original\n+++ replayed\n@@"), "{d}");
        assert!(d.contains("-x-version: 1.0.0\n+x-version: 2.0.0\n"), "{d}");
        assert!(d.contains("-v1\n+v2\n"), "{d}");
        assert_eq!(unified(&a, &a), "");
    }
}
