//! The dashboard's static files, built into the binary: `/` is the page,
//! `/assets/*` its scripts (plain JavaScript modules, no build step),
//! style sheet and icon. The page may load only what the node serves
//! (`Content-Security-Policy: default-src 'self'`): no CDN, no external
//! fetch.

use http::{HeaderValue, Response, StatusCode, header};

use super::{SiteBody, respond};

/// One file of the page.
pub(super) struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// What the page may load and where it may connect: only the node's site.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("assets/index.html"),
    },
    Asset {
        path: "/assets/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/style.css"),
    },
    Asset {
        path: "/assets/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/icon.svg"),
    },
    Asset {
        path: "/assets/errors.js",
        content_type: JS,
        body: include_bytes!("assets/errors.js"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: JS,
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        path: "/assets/tables.js",
        content_type: JS,
        body: include_bytes!("assets/tables.js"),
    },
    Asset {
        path: "/assets/graph.js",
        content_type: JS,
        body: include_bytes!("assets/graph.js"),
    },
    Asset {
        path: "/assets/inspector.js",
        content_type: JS,
        body: include_bytes!("assets/inspector.js"),
    },
];

/// The file served at `path` (`/index.html` is `/`).
pub(super) fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

impl Asset {
    /// The file as a response, under the page's security policy.
    pub(super) fn response(&self) -> Response<SiteBody> {
        let mut resp = respond(StatusCode::OK, self.content_type, self.body);
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let page = std::str::from_utf8(find("/").unwrap().body).unwrap();
        for asset in ASSETS.iter().skip(1) {
            let name = asset.path.trim_start_matches("/assets/");
            let named = page.contains(asset.path)
                || ASSETS.iter().any(|a| {
                    std::str::from_utf8(a.body)
                        .unwrap()
                        .contains(&format!("./{name}"))
                });
            assert!(named, "{} is served but nothing loads it", asset.path);
        }
        assert!(find("/index.html").is_some());
        assert!(find("/assets/nothing.js").is_none());
        // No file reaches out of the node's site.
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            for scheme in ["http://", "https://", "//cdn"] {
                let outside = text
                    .match_indices(scheme)
                    .any(|(i, _)| !text[i..].starts_with("http://www.w3.org/2000/svg"));
                assert!(!outside, "{} names an outside address", asset.path);
            }
        }
    }
}
