//! PostgreSQL: every replica `LISTEN`s on the registry's channel and drops changed records
//! from its cache; while it is not listening, its lookups go to the database.

use std::{sync::Weak, time::Duration};

use sqlx::{PgPool, postgres::PgListener};

use crate::registry::cache::Cache;

/// The longest wait between two attempts to listen again.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// A connection listening on `channel`.
pub(super) async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Applies the notifications of `listener` to the cache until the registry is gone; when
/// the connection drops, stops serving the cache and listens again (clearing the cache,
/// since notifications were missed meanwhile).
pub(super) async fn run(
    pool: PgPool,
    mut listener: PgListener,
    channel: String,
    weak: Weak<Cache>,
    mut stopped: tokio::sync::watch::Receiver<()>,
) {
    loop {
        let received = tokio::select! {
            received = listener.try_recv() => received,
            _ = stopped.changed() => return,
        };
        let Some(cache) = weak.upgrade() else {
            return;
        };
        if let Ok(Some(notification)) = received {
            cache.apply(notification.payload().as_bytes());
        } else {
            {
                tracing::debug!("keygate: registry notifications lost; cache not served");
                cache.disconnected();
                drop(cache);
                let mut wait = Duration::from_millis(50);
                listener = loop {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stopped.changed() => return,
                    }
                    match listen(&pool, &channel).await {
                        Ok(listener) => break listener,
                        Err(error) => {
                            tracing::debug!(%error, "keygate: cannot listen for registry changes yet");
                            wait = (wait * 2).min(MAX_RETRY);
                        }
                    }
                };
                let Some(cache) = weak.upgrade() else {
                    return;
                };
                cache.subscribed();
            }
        }
    }
}
