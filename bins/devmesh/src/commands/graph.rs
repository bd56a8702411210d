//! `devmesh graph [--json | --dot]`: the service graph as this node sees
//! it, read from its site's `/api/graph` (built by `mesh_proxy::console`).

use std::path::Path;

use anyhow::Context as _;

use crate::{Failure, site};

/// How the graph is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For a terminal.
    Text,
    /// The stable JSON document.
    Json,
    /// Graphviz DOT.
    Dot,
}

/// `devmesh graph`.
pub async fn graph(home: &Path, format: Format) -> Result<(), Failure> {
    let addr = site::front_door(home).await?;
    let query = match format {
        Format::Text => "/api/graph?format=text",
        Format::Json => "/api/graph",
        Format::Dot => "/api/graph?format=dot",
    };
    let body = site::get(addr, query).await?;
    match format {
        Format::Json => {
            let value: serde_json::Value =
                serde_json::from_str(&body).context("the node's graph is not JSON")?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Text | Format::Dot => print!("{body}"),
    }
    Ok(())
}
