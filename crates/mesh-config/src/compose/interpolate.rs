//! Compose's variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`
//! (unset or empty), `${VAR-default}` (unset), `${VAR:?message}` and
//! `${VAR?message}` (an error), `$$` for a literal `$`. An unset variable
//! without a default is the empty string, as in Compose.

/// A variable that must be set and is not, or a `${` left open.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unset {
    pub line: usize,
    pub key: Option<String>,
    pub message: String,
}

/// `source` with its variables replaced by what `lookup` gives.
pub(super) fn interpolate(
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Unset> {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let line = || {
            source[..source.len() - rest.len() + at]
                .matches('\n')
                .count()
                + 1
        };
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                return Err(Unset {
                    line: line(),
                    key: None,
                    message: "a `${` is not closed by `}`".into(),
                });
            };
            out.push_str(
                &braced_value(&braced[..end], lookup).map_err(|(key, message)| Unset {
                    line: line(),
                    key: Some(key),
                    message,
                })?,
            );
            rest = &braced[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of `${inner}`.
fn braced_value(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (String, String)> {
    let split = inner
        .find([':', '-', '?'])
        .map_or((inner, ""), |i| inner.split_at(i));
    let (name, op) = split;
    let value = lookup(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (kind, arg) = if let Some(arg) = op.strip_prefix(":-") {
        ("default-if-empty", arg)
    } else if let Some(arg) = op.strip_prefix('-') {
        ("default-if-unset", arg)
    } else if let Some(arg) = op.strip_prefix(":?") {
        ("error-if-empty", arg)
    } else if let Some(arg) = op.strip_prefix('?') {
        ("error-if-unset", arg)
    } else {
        ("plain", "")
    };
    let missing = |arg: &str| {
        let why = if arg.is_empty() {
            "it is required".to_owned()
        } else {
            arg.to_owned()
        };
        Err((
            name.to_owned(),
            format!("variable {name} is not set: {why}; set it in the environment or in .env"),
        ))
    };
    match kind {
        "default-if-empty" if !set_nonempty => Ok(arg.to_owned()),
        "default-if-unset" if value.is_none() => Ok(arg.to_owned()),
        "error-if-empty" if !set_nonempty => missing(arg),
        "error-if-unset" if value.is_none() => missing(arg),
        _ => Ok(value.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.2".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_every_form() {
        let got = interpolate(
            "a:$TAG b:${TAG} c:${NOPE:-x} d:${EMPTY:-y} e:${EMPTY-z} f:$$TAG g:${NOPE} h:$ i:$TAG.x",
            &vars,
        )
        .unwrap();
        assert_eq!(got, "a:1.2 b:1.2 c:x d:y e: f:$TAG g: h:$ i:1.2.x");
    }

    #[test]
    fn a_required_variable_names_itself_and_its_line() {
        let e = interpolate("x: 1\nimage: ${IMAGE:?name the image}\n", &vars).unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.key.as_deref(), Some("IMAGE"));
        assert!(e.message.contains("name the image"), "{}", e.message);
        let e = interpolate("x: ${OPEN", &vars).unwrap_err();
        assert!(e.message.contains("not closed"));
    }
}
