//! [`RedisRegistry`]: key records in Redis, a local cache, and invalidations over pub/sub.

use std::{
    error::Error,
    fmt,
    sync::{Arc, Weak},
    time::Duration,
};

use ::redis::{
    Client, Cmd, FromRedisValue, IntoConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind,
    RedisError, Script,
    aio::{AsyncPushSender, ConnectionManager, SendError},
};
use time::OffsetDateTime;

use super::{DEFAULT_TIMEOUT, arg_from_parts, eval, evalsha, manager_config, send};
use crate::{
    BackendFuture, KeyDigest, KeyId, KeyLookup, KeyRecord, KeyRegistry, KeyUpdate, RegistryError,
    limit::Clock,
    registry::{
        LookupFuture,
        cache::{Cache, CacheKey, message},
    },
};

/// The prefix of the registry's keys and channel unless another is configured.
pub const DEFAULT_REGISTRY_PREFIX: &str = "keygate:registry:";

/// How many records the local cache holds unless configured.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// How long a record is served from the local cache unless configured: the longest a
/// replica that missed an invalidation (a network partition) keeps accepting a revoked
/// key.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);

/// How often a change is retried when other replicas keep changing the same key.
const MAX_UPDATE_ATTEMPTS: usize = 16;

/// Adds a record unless its key id or digest is taken.
///
/// KEYS: record by key id, record by digest, the principal's set of key ids.
/// ARGV: the record (JSON), the key id. Returns 1, or 0 for a duplicate.
const REGISTER: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
";

/// Replaces a record if it is still the one read (compare-and-set), and tells every
/// replica in the same atomic step.
///
/// KEYS: record by key id, record by digest.
/// ARGV: the record as read, the new record, the channel, the message.
/// Returns 1, or 0 if the record changed meanwhile.
const UPDATE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// Removes a record if it is still the one read, and tells every replica in the same
/// atomic step.
///
/// KEYS: record by key id, record by digest, the principal's set of key ids.
/// ARGV: the record as read, the key id, the channel, the message.
/// Returns 1, or 0 if the record changed meanwhile.
const DELETE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// A [`KeyRegistry`] on Redis, shared by every replica: records (SHA-256 digests, never
/// keys) live in Redis, lookups are served from a bounded local cache, and revocations
/// and rotations reach every replica's cache at once.
///
/// * **Lookups** ([`find_by_id`](KeyLookup::find_by_id),
///   [`find_by_digest`](KeyLookup::find_by_digest)) are answered from the cache when
///   it holds the record (no allocation, no round trip), otherwise with one `GET`. A
///   record is cached for at most the [cache lifetime](RedisRegistryBuilder::cache_ttl)
///   (default 10 s), at most [`cache_capacity`](RedisRegistryBuilder::cache_capacity)
///   records (default 10 000). Unknown keys are not cached, so a new key works at once
///   everywhere.
/// * **Changes** ([`revoke`](KeyRegistry::revoke),
///   [`set_expiry`](KeyRegistry::set_expiry), and so [`rotate`](KeyRegistry::rotate))
///   are one atomic script that updates the record and publishes the key's id and
///   digest on the registry's channel; every replica is subscribed (RESP3 pushes on its
///   connection) and drops the record from its cache when the message arrives, typically
///   within a millisecond.
/// * **Missed messages**: while the connection is down a replica does not serve from its
///   cache but asks Redis (which also reconnects); when it has subscribed again, it
///   clears its cache. When Redis cannot be reached, a cached record younger than the
///   cache lifetime is still served; other lookups fail with
///   [`RegistryError::Unavailable`] (503 `auth_unavailable`, never a bad key). The cache
///   lifetime thus bounds how long any replica can miss a revocation.
///
/// Every round trip is bounded by the [timeout](RedisRegistryBuilder::timeout). Last
/// use is not recorded ([`mark_used`](KeyLookup::mark_used) does nothing): it would
/// cost a write per request.
///
/// ```no_run
/// use std::time::Duration;
/// use keygate::{KeyGrant, KeyRegistry, redis::RedisRegistry};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = RedisRegistry::builder()
///     .prefix("coordinator:keys:")
///     .cache_capacity(50_000)
///     .cache_ttl(Duration::from_secs(5))
///     .connect("redis://127.0.0.1:6379/")
///     .await?;
/// let issued = registry.issue(KeyGrant::new("coordinator-1").workspaces(["ws-1"])).await?;
/// // Show `issued.key.expose_secret()` once. Later, on any replica:
/// registry.revoke(&issued.record.key_id, time::OffsetDateTime::now_utc()).await?;
/// # Ok(()) }
/// ```
pub struct RedisRegistry {
    connection: ConnectionManager,
    cache: Arc<Cache>,
    names: Names,
    register: Script,
    update: Script,
    delete: Script,
    timeout: Duration,
}

/// The registry's key names.
#[derive(Debug)]
struct Names {
    prefix: String,
    channel: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            channel: format!("{prefix}changes"),
        }
    }

    fn by_id(&self, key_id: &KeyId) -> Vec<u8> {
        [self.prefix.as_bytes(), b"key:", key_id.as_str().as_bytes()].concat()
    }

    fn by_digest(&self, digest: &KeyDigest) -> Vec<u8> {
        [
            self.prefix.as_bytes(),
            b"digest:",
            digest.to_hex().as_bytes(),
        ]
        .concat()
    }

    fn principal(&self, principal_id: &str) -> Vec<u8> {
        [
            self.prefix.as_bytes(),
            b"principal:",
            principal_id.as_bytes(),
        ]
        .concat()
    }

    /// `GET <prefix>key:<id>`, written straight into the command.
    fn get_by_id(&self, key_id: &KeyId) -> Cmd {
        let mut cmd = Cmd::with_capacity(2, 3 + self.prefix.len() + 4 + crate::key::KEY_ID_LEN);
        cmd.arg("GET");
        arg_from_parts(
            &mut cmd,
            &[self.prefix.as_bytes(), b"key:", key_id.as_str().as_bytes()],
        );
        cmd
    }

    /// `GET <prefix>digest:<hex>`, written straight into the command.
    fn get_by_digest(&self, digest: &KeyDigest) -> Cmd {
        let mut hex = [0u8; 64];
        // 32 bytes always fit in 64 hex digits.
        let _ = hex::encode_to_slice(digest.as_bytes(), &mut hex);
        let mut cmd = Cmd::with_capacity(2, 3 + self.prefix.len() + 7 + hex.len());
        cmd.arg("GET");
        arg_from_parts(&mut cmd, &[self.prefix.as_bytes(), b"digest:", &hex]);
        cmd
    }
}

/// Receives the pushes of the registry's connection: invalidation messages,
/// subscription confirmations, disconnections.
struct Listener {
    cache: Weak<Cache>,
    channel: String,
}

impl AsyncPushSender for Listener {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let Some(cache) = self.cache.upgrade() else {
            // The registry is gone.
            return Err(SendError);
        };
        match info.kind {
            PushKind::Message => {
                if let Some(message) = Msg::from_push_info(info)
                    && message.get_channel_name() == self.channel
                {
                    cache.apply(message.get_payload_bytes());
                }
            }
            PushKind::Subscribe => cache.subscribed(),
            PushKind::Disconnection => {
                tracing::debug!("keygate: registry connection lost; cache not served");
                cache.disconnected();
            }
            _ => {}
        }
        Ok(())
    }
}

type BoxError = Box<dyn Error + Send + Sync>;

fn unavailable(error: impl Into<BoxError>) -> RegistryError {
    RegistryError::Unavailable(error.into())
}

async fn query<T: FromRedisValue>(
    connection: &mut ConnectionManager,
    cmd: &Cmd,
) -> Result<T, RedisError> {
    Ok(::redis::from_redis_value(send(connection, cmd).await?)?)
}

/// Runs a script.
async fn run<T: FromRedisValue>(
    connection: &mut ConnectionManager,
    script: &Script,
    cmd: &Cmd,
) -> Result<T, RedisError> {
    Ok(::redis::from_redis_value(
        eval(connection, script, cmd).await?,
    )?)
}

/// Reads one record.
async fn fetch(
    connection: &mut ConnectionManager,
    cmd: &Cmd,
) -> Result<Option<KeyRecord>, BoxError> {
    let json: Option<Vec<u8>> = query(connection, cmd).await?;
    match json {
        Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
        None => Ok(None),
    }
}

impl RedisRegistry {
    /// Connects to the Redis server at `url` (e.g. `redis://10.0.0.5:6379/0`) with the
    /// default prefix, timeout and cache, and subscribes to the registry's channel.
    ///
    /// The connection speaks RESP3 whatever the URL says (Redis 6 or later).
    ///
    /// # Errors
    ///
    /// The URL is invalid or the server cannot be reached.
    pub async fn connect(url: impl IntoConnectionInfo) -> Result<Self, RedisError> {
        Self::builder().connect(url).await
    }

    /// Starts configuring a registry.
    pub fn builder() -> RedisRegistryBuilder {
        RedisRegistryBuilder {
            prefix: DEFAULT_REGISTRY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_ttl: DEFAULT_CACHE_TTL,
        }
    }

    /// The number of records in the local cache.
    #[must_use]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Whether this replica is subscribed to the registry's channel, so that its cache
    /// is served.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.cache.is_listening()
    }

    fn find(&self, key: CacheKey, cmd: impl FnOnce(&Names) -> Cmd) -> LookupFuture {
        self.cache.lookup(key, || self.fetch(cmd))
    }

    fn fetch(
        &self,
        cmd: impl FnOnce(&Names) -> Cmd,
    ) -> impl Future<Output = Result<Option<KeyRecord>, RegistryError>> + Send + 'static {
        let cmd = cmd(&self.names);
        let mut connection = self.connection.clone();
        async move {
            fetch(&mut connection, &cmd)
                .await
                .map_err(RegistryError::Unavailable)
        }
    }

    /// Changes a record with compare-and-set, publishing the change.
    async fn change(
        &self,
        key_id: KeyId,
        change: impl Fn(&mut KeyRecord),
    ) -> Result<Arc<KeyRecord>, RegistryError> {
        let mut connection = self.connection.clone();
        let by_id = self.names.by_id(&key_id);
        let mut read = Cmd::new();
        read.arg("GET").arg(&by_id);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let old: Option<Vec<u8>> = query(&mut connection, &read).await.map_err(unavailable)?;
            let old = old.ok_or(RegistryError::UnknownKey(key_id))?;
            let mut record: KeyRecord = serde_json::from_slice(&old).map_err(unavailable)?;
            change(&mut record);
            let new = serde_json::to_vec(&record).map_err(unavailable)?;
            let mut cmd = evalsha(&self.update, 2, (4, 2 * new.len() + 256));
            cmd.arg(&by_id)
                .arg(self.names.by_digest(&record.digest))
                .arg(&old)
                .arg(&new)
                .arg(&self.names.channel)
                .arg(message(record.key_id, &record.digest));
            let applied: i64 = run(&mut connection, &self.update, &cmd)
                .await
                .map_err(unavailable)?;
            if applied == 1 {
                // This replica's own message arrives too; not waiting for it.
                self.cache.invalidate(record.key_id, record.digest);
                return Ok(Arc::new(record));
            }
        }
        Err(unavailable(
            "the key kept changing concurrently; giving up after 16 attempts",
        ))
    }
}

impl RedisRegistry {
    /// Deletes a record with compare-and-set, publishing the change.
    async fn remove(&self, key_id: KeyId) -> Result<Arc<KeyRecord>, RegistryError> {
        let mut connection = self.connection.clone();
        let by_id = self.names.by_id(&key_id);
        let mut read = Cmd::new();
        read.arg("GET").arg(&by_id);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let old: Option<Vec<u8>> = query(&mut connection, &read).await.map_err(unavailable)?;
            let old = old.ok_or(RegistryError::UnknownKey(key_id))?;
            let record: KeyRecord = serde_json::from_slice(&old).map_err(unavailable)?;
            let mut cmd = evalsha(&self.delete, 3, (4, old.len() + 256));
            cmd.arg(&by_id)
                .arg(self.names.by_digest(&record.digest))
                .arg(self.names.principal(&record.principal_id))
                .arg(&old)
                .arg(key_id.as_str())
                .arg(&self.names.channel)
                .arg(message(record.key_id, &record.digest));
            let applied: i64 = run(&mut connection, &self.delete, &cmd)
                .await
                .map_err(unavailable)?;
            if applied == 1 {
                self.cache.invalidate(record.key_id, record.digest);
                return Ok(Arc::new(record));
            }
        }
        Err(unavailable(
            "the key kept changing concurrently; giving up after 16 attempts",
        ))
    }
}

impl KeyLookup for RedisRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        self.find(CacheKey::Id(*key_id), |names| names.get_by_id(key_id))
    }

    fn find_by_id_uncached(&self, key_id: &KeyId) -> LookupFuture {
        self.cache.refresh(CacheKey::Id(*key_id), || {
            self.fetch(|names| names.get_by_id(key_id))
        })
    }

    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        self.find(CacheKey::Digest(*digest), |names| {
            names.get_by_digest(digest)
        })
    }

    #[cfg(feature = "session")]
    fn changes(&self) -> Option<crate::registry::KeyChanges> {
        Some(self.cache.changes())
    }
}

impl KeyRegistry for RedisRegistry {
    fn register(&self, record: KeyRecord) -> BackendFuture<'_, Result<(), RegistryError>> {
        BackendFuture::new(async move {
            let json = serde_json::to_vec(&record).map_err(unavailable)?;
            let mut cmd = evalsha(&self.register, 3, (5, json.len() + 256));
            cmd.arg(self.names.by_id(&record.key_id))
                .arg(self.names.by_digest(&record.digest))
                .arg(self.names.principal(&record.principal_id))
                .arg(json)
                .arg(record.key_id.as_str());
            let added: i64 = run(&mut self.connection.clone(), &self.register, &cmd)
                .await
                .map_err(unavailable)?;
            if added == 1 {
                Ok(())
            } else {
                Err(RegistryError::Duplicate)
            }
        })
    }

    fn revoke(
        &self,
        key_id: &KeyId,
        at: OffsetDateTime,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        let key_id = *key_id;
        BackendFuture::new(self.change(key_id, move |record| {
            record.revoke_at(at);
        }))
    }

    fn set_expiry(
        &self,
        key_id: &KeyId,
        expires_at: Option<OffsetDateTime>,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        let key_id = *key_id;
        BackendFuture::new(self.change(key_id, move |record| record.expires_at = expires_at))
    }

    fn update(
        &self,
        key_id: &KeyId,
        change: KeyUpdate,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        let key_id = *key_id;
        BackendFuture::new(self.change(key_id, move |record| change.apply(record)))
    }

    fn delete(&self, key_id: &KeyId) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        let key_id = *key_id;
        BackendFuture::new(self.remove(key_id))
    }

    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>> {
        let mut members = Cmd::new();
        members
            .arg("SMEMBERS")
            .arg(self.names.principal(principal_id));
        BackendFuture::new(async move {
            let mut connection = self.connection.clone();
            let ids: Vec<String> = query(&mut connection, &members)
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut get = Cmd::new();
            get.arg("MGET");
            for id in &ids {
                arg_from_parts(
                    &mut get,
                    &[self.names.prefix.as_bytes(), b"key:", id.as_bytes()],
                );
            }
            let found: Vec<Option<Vec<u8>>> =
                query(&mut connection, &get).await.map_err(unavailable)?;
            found
                .into_iter()
                .flatten()
                .map(|json| {
                    serde_json::from_slice(&json)
                        .map(Arc::new)
                        .map_err(unavailable)
                })
                .collect()
        })
    }

    fn list_principals(&self) -> BackendFuture<'_, Result<Vec<String>, RegistryError>> {
        BackendFuture::new(async move {
            let mut connection = self.connection.clone();
            let start = self.names.prefix.len() + "principal:".len();
            let pattern = [glob_escape(&self.names.prefix).as_str(), "principal:*"].concat();
            let mut cursor = 0u64;
            let mut principals = Vec::new();
            loop {
                let mut scan = Cmd::new();
                scan.arg("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, names): (u64, Vec<Vec<u8>>) =
                    query(&mut connection, &scan).await.map_err(unavailable)?;
                principals.extend(
                    names
                        .iter()
                        .filter_map(|name| name.get(start..))
                        .map(|id| String::from_utf8_lossy(id).into_owned()),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            principals.sort_unstable();
            principals.dedup();
            Ok(principals)
        })
    }
}

/// `text` with the characters special to Redis' glob patterns escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection is left out: its URL may carry a password.
        f.debug_struct("RedisRegistry")
            .field("prefix", &self.names.prefix)
            .field("timeout", &self.timeout)
            .field("cached", &self.cache.len())
            .field("cache_capacity", &self.cache.capacity())
            .field("cache_ttl", &self.cache.ttl())
            .field("listening", &self.cache.is_listening())
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisRegistry`]; made by [`RedisRegistry::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisRegistryBuilder {
    prefix: String,
    timeout: Duration,
    cache_capacity: usize,
    cache_ttl: Duration,
}

impl RedisRegistryBuilder {
    /// The prefix of the registry's keys and channel (default
    /// [`DEFAULT_REGISTRY_PREFIX`], `keygate:registry:`). Every replica must use the same.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How long one round trip, or one connection attempt, may take (default
    /// [`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT), 250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most records the local cache holds (default [`DEFAULT_CACHE_CAPACITY`]);
    /// `0` turns the cache off, so every lookup is a round trip.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// How long a record is served from the local cache (default [`DEFAULT_CACHE_TTL`],
    /// 10 s): the bound on how long a replica that missed an invalidation keeps a stale
    /// record.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Connects to the Redis server at `url` (over RESP3, whatever the URL says) and
    /// subscribes to the registry's channel.
    ///
    /// # Errors
    ///
    /// The URL is invalid or the server cannot be reached in time.
    pub async fn connect(self, url: impl IntoConnectionInfo) -> Result<RedisRegistry, RedisError> {
        let info = url.into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings))?;
        let names = Names::new(&self.prefix);
        let cache = Arc::new(Cache::new(
            self.cache_capacity,
            self.cache_ttl,
            Clock::system(),
        ));
        let listener = Listener {
            cache: Arc::downgrade(&cache),
            channel: names.channel.clone(),
        };
        let config = manager_config(self.timeout)
            .set_push_sender(listener)
            .set_automatic_resubscription();
        let mut connection = client.get_connection_manager_with_config(config).await?;
        connection.subscribe(&names.channel).await?;
        Ok(RedisRegistry {
            connection,
            cache,
            names,
            register: Script::new(REGISTER),
            update: Script::new(UPDATE),
            delete: Script::new(DELETE),
            timeout: self.timeout,
        })
    }
}
