//! Sharing containers while they run: what `devmesh share --docker` and a
//! project with `[docker] share = true` do, whoever registers the services.

use std::{collections::BTreeMap, future::Future, time::Duration};

use futures::StreamExt as _;

use crate::{Change, Engine, EngineError, Offer, offers};

/// Time after a container event until the containers are listed once more:
/// an engine may report a container's end before its list says so.
const SECOND_LOOK: Duration = Duration::from_secs(1);

/// Registers and withdraws the services of containers.
pub trait Sink: Send {
    /// Shares `offer`; `false` when it could not (the sink says why).
    fn share(&mut self, offer: &Offer) -> impl Future<Output = bool> + Send;
    /// Withdraws what [`Sink::share`] shared for `offer`.
    fn withdraw(&mut self, offer: &Offer) -> impl Future<Output = ()> + Send;
}

/// Shares each running container with a published port (only those with
/// label `only`, `(key, value)`), then follows the engine: a container that
/// starts is shared, one that goes away withdrawn. `shared` holds what is
/// shared, by service name. It returns the error that ended it when the
/// engine goes away; to stop it, drop it, then withdraw what `shared`
/// still holds.
pub async fn follow<S: Sink>(
    engine: &Engine,
    only: Option<(&str, &str)>,
    sink: &mut S,
    shared: &mut BTreeMap<String, Offer>,
) -> EngineError {
    let mut changes = engine.changes();
    if let Err(e) = sync(engine, only, sink, shared).await {
        return e;
    }
    let mut again: Option<tokio::time::Instant> = None;
    loop {
        let second_look = async {
            match again {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            () = second_look => {
                again = None;
                sync(engine, only, sink, shared).await
            }
            change = changes.next() => match change {
                Some(Ok(Change::Started { .. } | Change::Gone { .. })) => {
                    again = Some(tokio::time::Instant::now() + SECOND_LOOK);
                    sync(engine, only, sink, shared).await
                }
                Some(Err(e)) => Err(e),
                None => Err(EngineError::Closed {
                    socket: engine.socket().to_owned(),
                }),
            },
        };
        if let Err(e) = result {
            return e;
        }
    }
}

/// Shares what runs now and is not shared, withdraws what is shared and
/// no longer runs (or changed).
async fn sync<S: Sink>(
    engine: &Engine,
    only: Option<(&str, &str)>,
    sink: &mut S,
    shared: &mut BTreeMap<String, Offer>,
) -> Result<(), EngineError> {
    let now: BTreeMap<String, Offer> = offers(&engine.containers().await?, only)
        .into_iter()
        .map(|o| (o.service.clone(), o))
        .collect();
    let gone: Vec<String> = shared
        .iter()
        .filter(|(name, offer)| now.get(*name) != Some(offer))
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some(offer) = shared.remove(&name) {
            sink.withdraw(&offer).await;
        }
    }
    for (name, offer) in now {
        if !shared.contains_key(&name) && sink.share(&offer).await {
            shared.insert(name, offer);
        }
    }
    Ok(())
}

/// `KEY=VALUE` of a label filter.
pub fn label(text: &str) -> Option<(&str, &str)> {
    text.split_once('=')
}
