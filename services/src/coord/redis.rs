//! Coordination through Redis: fill leases, hot-entry invalidation and
//! short-lived shared values (upstream registry tokens, `{prefix}value:{key}`).
//!
//! A lease is `SET {prefix}lease:{key} {replica} NX PX ttl`, renewed while
//! the fill runs and released (only by its holder, atomically) when the
//! entry is committed; if the holder dies the lease simply expires.
//! Invalidations go out on one pub/sub channel, and each replica drops the
//! hot copies other replicas changed. A message is `{replica}\n{key}` (`*`
//! for all). A purge or flush sends `{replica} {ack}\n{key}`, every
//! replica that acted on it (the sender's own listener too) increments
//! `{prefix}ack:{ack}`, and the sender waits until the count reaches the
//! number of listeners `PUBLISH` reached. Before a flush touches the index,
//! `{replica} {ack}\n\x1fflushing\x1f{remote or *}\x1f{0|1}` asks every
//! replica to stop its fills in flight from committing as fresh and to
//! finish the commits under way (a cache key never starts with `\x1f`);
//! `{replica}\n\x1fblob\x1f{blob key}` tells replicas a blob was deleted,
//! so they free their local copies of it.
//! Every call has a short deadline: when Redis is down or slow, callers go
//! on without it.

use std::{sync::Arc, time::Duration};

use artifactapi_layers::coord::Coordinator;
use async_trait::async_trait;
use deadpool_redis::{
    redis::{self, AsyncCommands},
    Config, PoolConfig, Runtime, Timeouts,
};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

/// How long any one Redis call may take before the caller goes on without it.
const OP_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a purge or flush waits for every replica to confirm it.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// Coordination through one Redis server.
pub struct RedisCoordinator {
    pool: deadpool_redis::Pool,
    client: redis::Client,
    prefix: String,
    replica: String,
    /// Numbers the invalidations this replica waits on.
    acks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordinator")
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .finish()
    }
}

const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl RedisCoordinator {
    /// Coordination through the Redis at `url`, with every key under
    /// `prefix`. Connects lazily: an unreachable Redis is not an error here.
    pub fn new(url: &str, prefix: &str, replica: &str) -> Result<Self, String> {
        let mut config = Config::from_url(url);
        let mut pool = PoolConfig::new(32);
        pool.timeouts =
            Timeouts { wait: Some(OP_TIMEOUT), create: Some(OP_TIMEOUT), recycle: Some(OP_TIMEOUT) };
        config.pool = Some(pool);
        let pool = config.create_pool(Some(Runtime::Tokio1)).map_err(|e| format!("REDIS_URL: {e}"))?;
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        Ok(Self {
            pool,
            client,
            prefix: prefix.to_owned(),
            replica: replica.to_owned(),
            acks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lease(&self, key: &str) -> Vec<u8> {
        [self.prefix.as_bytes(), b"lease:", key.as_bytes()].concat()
    }

    fn value(&self, key: &str) -> Vec<u8> {
        [self.prefix.as_bytes(), b"value:", key.as_bytes()].concat()
    }

    fn channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    fn ack(&self, id: &str) -> String {
        format!("{}ack:{id}", self.prefix)
    }

    /// Publishes `body` with a fresh confirmation id and waits (at most
    /// [`ACK_WAIT`]) until every listener has confirmed it.
    async fn publish_confirmed(&self, body: &str) {
        let n = self.acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{n}", self.replica);
        let message = format!("{} {id}\n{body}", self.replica);
        let listeners = with_deadline(async {
            let mut conn = self.conn().await?;
            conn.publish::<_, _, i64>(self.channel(), message).await.map_err(|e| e.to_string())
        })
        .await;
        let listeners = match listeners {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not tell the other replicas of a purge or flush");
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        loop {
            let confirmed = with_deadline(async {
                let mut conn = self.conn().await?;
                conn.get::<_, Option<i64>>(self.ack(&id)).await.map_err(|e| e.to_string())
            })
            .await;
            if matches!(confirmed, Ok(Some(n)) if n >= listeners) || (listeners == 0) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    listeners,
                    confirmed = ?confirmed,
                    "not every replica confirmed a purge or flush in time; going on"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Counts one replica's confirmation of invalidation `id`.
    async fn confirm(&self, id: &str) {
        let confirmed = with_deadline(async {
            let mut conn = self.conn().await?;
            redis::pipe()
                .incr(self.ack(id), 1)
                .ignore()
                .pexpire(self.ack(id), ACK_WAIT.as_millis() as i64 * 5)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        if let Err(e) = confirmed {
            tracing::debug!(error = %e, "could not confirm an invalidation");
        }
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, String> {
        self.pool.get().await.map_err(|e| format!("redis: {e}"))
    }

    /// Answers once Redis answers a PING.
    pub async fn ping(&self) -> Result<(), String> {
        with_deadline(async {
            let mut conn = self.conn().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
    }

    /// Listens for other replicas' notices for as long as the process runs,
    /// reconnecting after failures. `on` acts on each; what it must still
    /// wait for, it answers as a future, and the notice is confirmed to its
    /// sender once that is done.
    pub fn listen(self: &Arc<Self>, on: impl Fn(Notice<'_>) -> Option<Settling> + Send + Sync + 'static) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match this.client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(this.channel()).await.is_ok() {
                            delay = Duration::from_millis(100);
                            // Anything may have changed while we were not listening.
                            on(Notice::All);
                            let mut messages = pubsub.into_on_message();
                            while let Some(message) = messages.next().await {
                                let Ok(payload) = message.get_payload::<String>() else { continue };
                                let Some((from, key)) = payload.split_once('\n') else { continue };
                                let (from, ack) = match from.split_once(' ') {
                                    Some((from, ack)) => (from, Some(ack)),
                                    None => (from, None),
                                };
                                let settling = if from != this.replica {
                                    Notice::parse(key).and_then(&on)
                                } else {
                                    None
                                };
                                if settling.is_some() || ack.is_some() {
                                    let (this, ack) = (this.clone(), ack.map(str::to_owned));
                                    tokio::spawn(async move {
                                        if let Some(settling) = settling {
                                            settling.await;
                                        }
                                        if let Some(ack) = ack {
                                            this.confirm(&ack).await;
                                        }
                                    });
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "redis subscription failed; retrying"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }
}

async fn with_deadline<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(OP_TIMEOUT, f).await.map_err(|_| "redis did not answer in time".to_owned())?
}

#[async_trait]
impl Coordinator for RedisCoordinator {
    async fn acquire(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        with_deadline(async {
            let mut conn = self.conn().await?;
            let set: Option<String> = redis::cmd("SET")
                .arg(self.lease(key))
                .arg(&self.replica)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(set.is_some())
        })
        .await
    }

    async fn renew(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        with_deadline(async {
            let mut conn = self.conn().await?;
            let renewed: i64 = redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(self.lease(key))
                .arg(&self.replica)
                .arg(ttl.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn release(&self, key: &str) {
        let released = with_deadline(async {
            let mut conn = self.conn().await?;
            let _: i64 = redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(self.lease(key))
                .arg(&self.replica)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await;
        if let Err(e) = released {
            tracing::debug!(error = %e, "could not release a fill lease; it will expire");
        }
    }

    async fn held(&self, key: &str) -> Result<bool, String> {
        with_deadline(async {
            let mut conn = self.conn().await?;
            conn.exists(self.lease(key)).await.map_err(|e| e.to_string())
        })
        .await
    }

    async fn shared_value(&self, key: &str) -> Result<Option<String>, String> {
        with_deadline(async {
            let mut conn = self.conn().await?;
            conn.get(self.value(key)).await.map_err(|e| e.to_string())
        })
        .await
    }

    async fn share_value(&self, key: &str, value: &str, ttl: Duration) -> Result<(), String> {
        with_deadline(async {
            let mut conn = self.conn().await?;
            conn.pset_ex::<_, _, ()>(self.value(key), value, ttl.as_millis().max(1) as u64)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn invalidate_everywhere(&self, key: Option<&str>) {
        self.publish_confirmed(key.unwrap_or("*")).await;
    }

    async fn flushing(&self, remote: Option<&str>, remove_immutable: bool) {
        let body = format!("\x1fflushing\x1f{}\x1f{}", remote.unwrap_or("*"), u8::from(remove_immutable));
        self.publish_confirmed(&body).await;
    }

    async fn blob_deleted(&self, key: &str) {
        self.invalidate(Some(&format!("\x1fblob\x1f{key}"))).await;
    }

    async fn invalidate(&self, key: Option<&str>) {
        let message = format!("{}\n{}", self.replica, key.unwrap_or("*"));
        let sent = with_deadline(async {
            let mut conn = self.conn().await?;
            conn.publish::<_, _, i64>(self.channel(), message).await.map_err(|e| e.to_string())?;
            Ok(())
        })
        .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not publish an invalidation");
        }
    }
}

/// What another replica did that this one must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// The entry under this cache key changed.
    Changed(&'a str),
    /// Anything may have changed.
    All,
    /// The blob under this key was deleted: local copies of it may go.
    BlobDeleted(&'a str),
    /// A flush of `remote` (every remote with `None`) is about to touch the
    /// index: fills in flight must not commit as fresh, and the commits
    /// under way must land first.
    Flushing {
        /// The remote flushed, or `None` for every remote.
        remote: Option<&'a str>,
        /// Immutable entries go too.
        remove_immutable: bool,
    },
}

impl<'a> Notice<'a> {
    fn parse(body: &'a str) -> Option<Self> {
        if body == "*" {
            return Some(Notice::All);
        }
        if let Some(blob) = body.strip_prefix("\x1fblob\x1f") {
            return Some(Notice::BlobDeleted(blob));
        }
        let Some(flushing) = body.strip_prefix("\x1fflushing\x1f") else {
            return Some(Notice::Changed(body));
        };
        let (remote, remove) = flushing.split_once('\x1f')?;
        let remote = (remote != "*").then_some(remote);
        Some(Notice::Flushing { remote, remove_immutable: remove == "1" })
    }
}

/// What a replica still waits for before it confirms a notice.
pub type Settling = BoxFuture<'static, ()>;

#[cfg(test)]
mod notice_tests {
    use super::Notice;

    #[test]
    fn notices_are_keys_all_or_flushes() {
        assert_eq!(Notice::parse("*"), Some(Notice::All));
        assert_eq!(Notice::parse("files\x1fa.tgz"), Some(Notice::Changed("files\x1fa.tgz")));
        assert_eq!(
            Notice::parse("\x1fflushing\x1f*\x1f1"),
            Some(Notice::Flushing { remote: None, remove_immutable: true })
        );
        assert_eq!(
            Notice::parse("\x1fflushing\x1ffiles\x1f0"),
            Some(Notice::Flushing { remote: Some("files"), remove_immutable: false })
        );
        assert_eq!(Notice::parse("\x1fflushing\x1fbroken"), None);
        assert_eq!(Notice::parse("\x1fblob\x1fcas/sha256/ab"), Some(Notice::BlobDeleted("cas/sha256/ab")));
    }
}
