//! `devmesh inspect` and `devmesh replay`: the inspector's API on the
//! local daemon's front door (docs/observability.md, "Inspector API").

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    Failure,
    cli::{InspectArgs, ReplayArgs},
    front::Front,
    output,
};

/// `devmesh inspect [ID]`.
pub async fn inspect(home: &Path, args: InspectArgs) -> Result<(), Failure> {
    if let Some(status) = &args.status {
        check_class(status)?;
    }
    let front = Front::of(home).await?;
    if let Some(id) = args.id {
        let entry = front.get(&format!("/api/requests/{id}")).await?;
        output::emit(args.json, &entry, output::request);
        return Ok(());
    }
    let query = list_query(&args);
    if args.follow {
        if !args.json {
            output::requests_header();
        }
        front
            .events(&format!("/api/requests?follow=1{query}"), |summary| {
                if args.json {
                    println!("{summary}");
                } else {
                    output::request_row(&summary);
                }
            })
            .await?;
        return Ok(());
    }
    let list = front
        .get(&format!("/api/requests?limit={}{query}", args.limit))
        .await?;
    output::emit(args.json, &list, output::requests);
    Ok(())
}

/// `devmesh replay ID`.
pub async fn replay(home: &Path, args: ReplayArgs) -> Result<(), Failure> {
    let edits = edits(&args)?;
    let front = Front::of(home).await?;
    let answer = front
        .post(&format!("/api/requests/{}/replay", args.id), &edits)
        .await?;
    output::emit(args.json, &answer, output::replay);
    Ok(())
}

/// The replay request's JSON body from the flags.
fn edits(args: &ReplayArgs) -> Result<Value, Failure> {
    let mut edits = json!({});
    if let Some(peer) = &args.to_peer {
        edits["to_peer"] = peer.clone().into();
    }
    if let Some(require) = &args.require {
        edits["require"] = require.clone().into();
    }
    let headers = args
        .set_headers
        .iter()
        .map(|h| match h.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() => Ok(json!([k.trim(), v.trim()])),
            _ => Err(Failure::usage(anyhow::anyhow!(
                "--set-header {h:?} is not K:V, such as --set-header 'Accept: text/plain'"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !headers.is_empty() {
        edits["set_headers"] = headers.into();
    }
    if let Some(file) = &args.body_file {
        let body = std::fs::read(file)
            .with_context(|| format!("reading --body-file {}", file.display()))
            .map_err(Failure::usage)?;
        edits["body_base64"] = data_encoding::BASE64.encode(&body).into();
    }
    Ok(edits)
}

/// The `&service=…&status=…` of a listing.
fn list_query(args: &InspectArgs) -> String {
    let mut q = String::new();
    if let Some(service) = &args.service {
        q.push_str(&format!("&service={}", encode(service)));
    }
    if let Some(status) = &args.status {
        q.push_str(&format!("&status={}", encode(status)));
    }
    q
}

/// A query value, percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `--status` is a class: refused before asking the daemon.
fn check_class(text: &str) -> Result<(), Failure> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_bytes() {
        [b'1'..=b'5', b'x', b'x'] => Ok(()),
        _ => Err(Failure::usage(anyhow::anyhow!(
            "--status {text:?} is not a class; use 1xx, 2xx, 3xx, 4xx or 5xx"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_and_classes_checked() {
        assert_eq!(encode("my api/1"), "my%20api%2F1");
        assert!(check_class("5XX").is_ok());
        assert!(check_class("500").is_err());
    }
}
