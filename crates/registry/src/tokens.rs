//! API tokens: the bootstrap admin token, created tokens with roles, revocation, and
//! bearer authentication with a short-lived cache.
//!
//! Tokens are 256-bit random strings, so a fast hash (BLAKE2b-256) is enough to store
//! them: nobody can brute-force a 256-bit preimage, the slow hashes are for human-chosen
//! passwords. The cache maps that hash to the token for a few seconds, so an API under
//! load does not query the database for every request; revoking a token (or replacing the
//! bootstrap token) clears it on this node at once, on other nodes sharing PostgreSQL
//! within the cache's time to live.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest as _};
use parking_lot::Mutex;
use sqlx::AnyPool;
use sqlx::Row as _;
use sqlx::any::AnyRow;
use subtle::ConstantTimeEq as _;

use crate::error::database;
use crate::{Error, Result, random};
use fleetwire_model::{ApiToken, NewToken, Role, TokenId};
use fleetwire_model::{BOOTSTRAP_TOKEN_NAME, check_text};

/// Created tokens start with this, so people (and secret scanners) recognise them.
const TOKEN_PREFIX: &str = "fwt_";
/// Longest bearer string looked up; anything longer is no token of ours.
const MAX_BEARER_CHARS: usize = 1024;

/// The cache of authenticated tokens; one per registry.
pub(crate) struct Tokens {
    cache: Mutex<TokenCache>,
    time_to_live: Duration,
    capacity: usize,
}

struct TokenCache {
    /// Bumped on every invalidation: a lookup that started before one must not insert
    /// what it read, or a token revoked meanwhile would live on in the cache.
    generation: u64,
    entries: HashMap<[u8; 32], (ApiToken, Instant)>,
}

fn hash(token: &str) -> [u8; 32] {
    Blake2b::<U32>::digest(token.as_bytes()).into()
}

fn token_from_row(row: &AnyRow) -> Result<ApiToken> {
    let id: String = row.try_get(0).map_err(database("reading a token"))?;
    let context = || format!("reading token {id:?}");
    let role: String = row.try_get(2).map_err(database(context()))?;
    Ok(ApiToken {
        name: row.try_get(1).map_err(database(context()))?,
        role: Role::parse(&role)
            .map_err(|error| Error::Inconsistent(format!("{}: stored role: {error}", context())))?,
        created_at: row.try_get(3).map_err(database(context()))?,
        id: TokenId(id),
    })
}

impl Tokens {
    pub(crate) fn new(time_to_live: Duration, capacity: usize) -> Tokens {
        Tokens {
            cache: Mutex::new(TokenCache {
                generation: 0,
                entries: HashMap::new(),
            }),
            time_to_live,
            capacity,
        }
    }

    fn invalidate(&self) {
        let mut cache = self.cache.lock();
        cache.generation += 1;
        cache.entries.clear();
    }

    pub(crate) async fn set_bootstrap(&self, pool: &AnyPool, token: &str, now: i64) -> Result<()> {
        check_text("bootstrap token", token, 1, MAX_BEARER_CHARS)?;
        let token_hash = random::to_hex(&hash(token));
        let context = "setting the bootstrap token";
        let mut transaction = pool.begin().await.map_err(database(context))?;
        // Setting the same token again (every start) keeps its row, id and creation time.
        sqlx::query(
            "DELETE FROM api_tokens WHERE is_bootstrap = 1 \
             AND (token_hash <> $1 OR revoked_at IS NOT NULL)",
        )
        .bind(&token_hash)
        .execute(&mut *transaction)
        .await
        .map_err(database(context))?;
        let existing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE is_bootstrap = 1")
                .fetch_one(&mut *transaction)
                .await
                .map_err(database(context))?;
        if existing == 0 {
            sqlx::query(
                "INSERT INTO api_tokens (id, name, role, token_hash, is_bootstrap, created_at) \
                 VALUES ($1, $2, $3, $4, 1, $5)",
            )
            .bind(format!("tok_{}", random::hex::<8>()?))
            .bind(BOOTSTRAP_TOKEN_NAME)
            .bind(Role::Admin.as_str())
            .bind(&token_hash)
            .bind(now)
            .execute(&mut *transaction)
            .await
            .map_err(database(context))?;
        }
        transaction.commit().await.map_err(database(context))?;
        self.invalidate();
        Ok(())
    }

    pub(crate) async fn create(
        &self,
        pool: &AnyPool,
        new: NewToken,
        now: i64,
    ) -> Result<(ApiToken, String)> {
        new.check()?;
        let secret = format!("{TOKEN_PREFIX}{}", random::secret()?);
        let token = ApiToken {
            id: TokenId(format!("tok_{}", random::hex::<8>()?)),
            name: new.name,
            role: new.role,
            created_at: now,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, is_bootstrap, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(&token.id.0)
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(random::to_hex(&hash(&secret)))
        .bind(now)
        .execute(pool)
        .await
        .map_err(database(format_args!("creating token {:?}", token.name)))?;
        Ok((token, secret))
    }

    pub(crate) async fn list(&self, pool: &AnyPool) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at FROM api_tokens \
             WHERE revoked_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(pool)
        .await
        .map_err(database("listing tokens"))?;
        rows.iter().map(token_from_row).collect()
    }

    pub(crate) async fn revoke(&self, pool: &AnyPool, id: &TokenId, now: i64) -> Result<()> {
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&id.0)
        .execute(pool)
        .await
        .map_err(database(format_args!("revoking token {:?}", id.0)))?;
        if revoked.rows_affected() == 0 {
            return Err(Error::NotFound {
                kind: "token",
                id: id.0.clone(),
            });
        }
        self.invalidate();
        Ok(())
    }

    pub(crate) async fn authenticate(
        &self,
        pool: &AnyPool,
        bearer: &str,
    ) -> Result<Option<ApiToken>> {
        if bearer.is_empty() || bearer.len() > MAX_BEARER_CHARS {
            return Ok(None);
        }
        let digest = hash(bearer);
        let generation = {
            let mut cache = self.cache.lock();
            match cache.entries.get(&digest) {
                Some((token, expires)) if *expires > Instant::now() => {
                    return Ok(Some(token.clone()));
                }
                Some(_) => {
                    cache.entries.remove(&digest);
                }
                None => {}
            }
            cache.generation
        };
        let token_hash = random::to_hex(&digest);
        let row = sqlx::query(
            "SELECT id, name, role, created_at, token_hash FROM api_tokens \
             WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&token_hash)
        .fetch_optional(pool)
        .await
        .map_err(database("authenticating a token"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        // The index lookup already matched; comparing again in constant time costs
        // nothing and does not rely on how the database compares text.
        let stored: String = row.try_get(4).map_err(database("authenticating a token"))?;
        if !bool::from(stored.as_bytes().ct_eq(token_hash.as_bytes())) {
            return Ok(None);
        }
        let token = token_from_row(&row)?;
        let mut cache = self.cache.lock();
        if cache.generation == generation && self.capacity > 0 {
            if cache.entries.len() >= self.capacity {
                let now = Instant::now();
                cache.entries.retain(|_, (_, expires)| *expires > now);
                if cache.entries.len() >= self.capacity {
                    cache.entries.clear();
                }
            }
            cache
                .entries
                .insert(digest, (token.clone(), Instant::now() + self.time_to_live));
        }
        Ok(Some(token))
    }
}
