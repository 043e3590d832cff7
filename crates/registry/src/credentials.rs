//! Device secrets: generation, argon2id hashing and verification (on blocking threads, a
//! bounded number at a time), and the verified-secret cache that makes reconnects cheap.
//!
//! Why the cache is safe: it holds, per device, a keyed BLAKE2b MAC (key drawn at random
//! when the process starts, never stored) over the device id, the stored argon2id hash and
//! the secret that verified against it. It never holds the secret. A later login is
//! accepted without argon2id only if its MAC equals the cached one (compared in constant
//! time), which requires the same secret *and* the same stored hash: rotating the secret,
//! here or on another node sharing the database, changes the hash and so voids the entry.
//! Any mismatch pays the full argon2id verification, so guessing stays as slow as without
//! the cache.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{
    self, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac as _};
use parking_lot::Mutex;
use sqlx::AnyPool;
use std::sync::atomic::{AtomicU64, Ordering};

use subtle::ConstantTimeEq as _;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::database;
use crate::{Error, Result, random};
use fleetwire_model::DeviceId;

type Tag = [u8; 32];

/// Hashing, verification and the verified-secret cache; one per registry.
pub(crate) struct Secrets {
    /// Each argon2id run takes 19 MiB and a core for milliseconds: a flood of logins must
    /// queue here rather than exhaust memory.
    hashing: Arc<Semaphore>,
    /// Device → MAC of its last verified secret (see the module docs).
    cache: Mutex<HashMap<DeviceId, Tag>>,
    cache_capacity: usize,
    /// BLAKE2b's full key size.
    mac_key: [u8; 64],
    /// A hash of a random secret, verified against when a device is unknown or has no
    /// credentials, so the answer takes as long as for a wrong secret of a real device.
    dummy_hash: OnceCell<String>,
    /// argon2id verifications run (the slow path), and logins answered from the cache.
    verifications: AtomicU64,
    cache_hits: AtomicU64,
}

impl Secrets {
    pub(crate) fn new(max_concurrent_hashes: usize, cache_capacity: usize) -> Result<Secrets> {
        Ok(Secrets {
            hashing: Arc::new(Semaphore::new(max_concurrent_hashes.max(1))),
            cache: Mutex::new(HashMap::new()),
            cache_capacity,
            mac_key: random::bytes()?,
            dummy_hash: OnceCell::new(),
            verifications: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        })
    }

    /// Issues a new secret for a device, replacing the previous one.
    pub(crate) async fn issue(&self, pool: &AnyPool, id: &DeviceId) -> Result<String> {
        let secret = random::secret()?;
        let hash = self.hash(secret.clone()).await?;
        let updated = sqlx::query("UPDATE devices SET secret_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id.as_str())
            .execute(pool)
            .await
            .map_err(database(format_args!(
                "storing credentials of device {:?}",
                id.as_str()
            )))?;
        if updated.rows_affected() == 0 {
            return Err(crate::devices::not_found(id));
        }
        // Not needed for correctness (the entry no longer matches the stored hash), but
        // frees the memory at once.
        self.forget(id);
        Ok(secret)
    }

    /// Whether `secret` is the device's current secret.
    pub(crate) async fn verify(
        &self,
        pool: &AnyPool,
        id: &DeviceId,
        secret: &[u8],
    ) -> Result<bool> {
        let stored: Option<Option<String>> = sqlx::query_scalar::<_, Option<String>>(
            "SELECT secret_hash FROM devices WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!(
            "reading credentials of device {:?}",
            id.as_str()
        )))?;
        let Some(Some(hash)) = stored else {
            let dummy = self
                .dummy_hash
                .get_or_try_init(|| async { self.hash(random::secret()?).await })
                .await?;
            self.verify_hash(dummy.clone(), secret.to_vec()).await?;
            return Ok(false);
        };
        let tag = self.tag(id, &hash, secret);
        let cached = self.cache.lock().get(id).copied();
        if cached.is_some_and(|cached| bool::from(cached.ct_eq(&tag))) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let is_valid = self.verify_hash(hash, secret.to_vec()).await?;
        if is_valid {
            let mut cache = self.cache.lock();
            if cache.len() >= self.cache_capacity && !cache.contains_key(id) {
                // Evicting an arbitrary entry keeps the bound without bookkeeping; the
                // evicted device pays one argon2id run at its next login.
                if let Some(evicted) = cache.keys().next().cloned() {
                    cache.remove(&evicted);
                }
            }
            if self.cache_capacity > 0 {
                cache.insert(id.clone(), tag);
            }
        }
        Ok(is_valid)
    }

    /// Drops the cached verification of a device (rotated or deleted).
    pub(crate) fn forget(&self, id: &DeviceId) {
        self.cache.lock().remove(id);
    }

    fn tag(&self, id: &DeviceId, hash: &str, secret: &[u8]) -> Tag {
        // Lengths first, so no two (id, hash, secret) triples feed the same bytes.
        let mut mac = <Blake2bMac<U32> as KeyInit>::new(&self.mac_key.into());
        for part in [id.as_str().as_bytes(), hash.as_bytes(), secret] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Argon2id hash (PHC string) of a secret, with OWASP's parameters (19 MiB, 2 passes).
    async fn hash(&self, secret: String) -> Result<String> {
        let salt = random::bytes::<16>()?;
        self.run_blocking(move || {
            let salt = SaltString::encode_b64(&salt)?;
            Ok(Argon2::default()
                .hash_password(secret.as_bytes(), &salt)?
                .to_string())
        })
        .await
    }

    /// argon2id verifications run so far, and logins the cache answered.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.verifications.load(Ordering::Relaxed),
            self.cache_hits.load(Ordering::Relaxed),
        )
    }

    async fn verify_hash(&self, hash: String, secret: Vec<u8>) -> Result<bool> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        self.run_blocking(move || {
            let hash = PasswordHash::new(&hash)?;
            match Argon2::default().verify_password(&secret, &hash) {
                Ok(()) => Ok(true),
                Err(password_hash::Error::Password) => Ok(false),
                Err(error) => Err(error),
            }
        })
        .await
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> password_hash::Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = Arc::clone(&self.hashing)
            .acquire_owned()
            .await
            .map_err(|error| Error::internal("waiting to hash a password")(error.into()))?;
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = work();
            drop(permit);
            outcome
        })
        .await
        .map_err(|error| Error::internal("the password hashing task")(error.into()))?;
        outcome.map_err(|error| Error::Internal {
            // The hasher's errors are not `std::error::Error` without its `std` feature.
            context: format!("password hashing: {error}"),
            source: None,
        })
    }
}
