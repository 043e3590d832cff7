//! Who may connect, and what a connected client may do.
//!
//! The broker does not know where credentials live: it asks an [`Authenticator`] (the
//! registry, wired in by the binary) and gets back an [`Access`]. Access rules are the
//! platform's topic contract, enforced here for every `PUBLISH`, `SUBSCRIBE` and will:
//! a device publishes only under `devices/{id}/` and subscribes only to
//! `devices/{id}/commands/#`. Failed logins are rate-limited per source address before
//! the authenticator is asked, so guessing costs the guesser, not the broker.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use fleetwire_mqtt_codec::{ReasonCode, TopicFilter};
use parking_lot::Mutex;

/// What a connected client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everything: anonymous clients when `allow_anonymous` is set, and brokers run
    /// without an authenticator.
    Full,
    /// A device: publish to `devices/{id}/...`, subscribe to `devices/{id}/commands/#`.
    Device(Arc<str>),
}

impl Access {
    /// The device this access belongs to, if any.
    pub fn device(&self) -> Option<&str> {
        match self {
            Access::Full => None,
            Access::Device(id) => Some(id),
        }
    }

    /// Whether a `PUBLISH` (or will) to `topic` is allowed.
    pub fn may_publish(&self, topic: &str) -> bool {
        match self {
            Access::Full => true,
            Access::Device(id) => topic
                .strip_prefix("devices/")
                .and_then(|rest| rest.strip_prefix(&**id))
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }

    /// Whether a subscription to `filter` is allowed: every topic it can match must lie
    /// under `devices/{id}/commands`. Shared subscriptions are judged by their filter.
    pub fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        match self {
            Access::Full => true,
            Access::Device(id) => {
                let filter = match filter.share() {
                    Some((_, inner)) => inner,
                    None => filter.as_str(),
                };
                filter
                    .strip_prefix("devices/")
                    .and_then(|rest| rest.strip_prefix(&**id))
                    .and_then(|rest| rest.strip_prefix("/commands"))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }
}

/// What a client presented in `CONNECT`.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The client identifier (may be empty).
    pub client_id: &'a str,
    /// User name; for devices, the device id.
    pub username: Option<&'a str>,
    /// Password; for devices, the device secret. Never log it.
    pub password: Option<&'a [u8]>,
    /// Where the connection comes from.
    pub peer: SocketAddr,
}

/// Why an authenticator refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Unknown user or wrong password (counted as a failed login).
    BadCredentials,
    /// Known, but not allowed to connect (counted as a failed login).
    NotAuthorized,
    /// The credential store cannot answer now (not counted: the client did nothing wrong).
    Unavailable,
}

impl Denial {
    pub(crate) fn reason_code(self) -> ReasonCode {
        match self {
            Denial::BadCredentials => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            Denial::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            Denial::Unavailable => ReasonCode::SERVER_UNAVAILABLE,
        }
    }
}

/// A boxed future, as trait methods return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides who may connect, and hears when devices come and go.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the credentials of a `CONNECT` that carries a user name (clients without
    /// one are anonymous, and only `allow_anonymous` admits them).
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Access, Denial>>;

    /// A device's first connection opened (`online`) or its last one closed.
    /// Called from the connection's task: must not block.
    fn presence(&self, device: &str, online: bool);
}

/// Token buckets of failed logins per source address: each address may fail `burst`
/// times in a row, then once per `refill` interval.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Addresses tracked before full buckets are forgotten.
const TRACKED_ADDRESSES: usize = 10_000;

impl FailureLimiter {
    pub(crate) fn new(burst: u32, per_minute: u32) -> FailureLimiter {
        FailureLimiter {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `address` may try to log in now.
    pub(crate) fn is_allowed(&self, address: IpAddr) -> bool {
        let now = Instant::now();
        let buckets = self.buckets.lock();
        buckets
            .get(&address)
            .is_none_or(|bucket| self.refilled(*bucket, now) >= 1.0)
    }

    /// Records a failed login from `address`.
    pub(crate) fn record_failure(&self, address: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= TRACKED_ADDRESSES && !buckets.contains_key(&address) {
            // Forget addresses whose buckets have refilled: they are as good as new.
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.burst);
            if buckets.len() >= TRACKED_ADDRESSES {
                // Under a wide attack, keep the table bounded rather than complete.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(address).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = (self.refilled(*bucket, now) - 1.0).max(0.0);
        bucket.updated = now;
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> Access {
        Access::Device(Arc::from(id))
    }

    #[test]
    fn devices_publish_only_under_their_own_prefix() {
        let access = device("d1");
        assert!(access.may_publish("devices/d1/telemetry"));
        assert!(access.may_publish("devices/d1/commands/reboot/response"));
        assert!(!access.may_publish("devices/d1"));
        assert!(!access.may_publish("devices/d10/telemetry"));
        assert!(!access.may_publish("devices/d2/telemetry"));
        assert!(!access.may_publish("other/d1/telemetry"));
        assert!(Access::Full.may_publish("anything/at/all"));
    }

    #[test]
    fn devices_subscribe_only_to_their_own_commands() {
        let access = device("d1");
        let allowed = |filter: &str| access.may_subscribe(&TopicFilter::new(filter).unwrap());
        assert!(allowed("devices/d1/commands/#"));
        assert!(allowed("devices/d1/commands"));
        assert!(allowed("devices/d1/commands/+"));
        assert!(allowed("devices/d1/commands/reboot"));
        assert!(allowed("$share/g/devices/d1/commands/#"));
        assert!(!allowed("devices/d1/#"));
        assert!(!allowed("devices/d1/commandsX"));
        assert!(!allowed("devices/+/commands/#"));
        assert!(!allowed("devices/d10/commands/#"));
        assert!(!allowed("#"));
        assert!(!allowed("$share/g/#"));
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let limiter = FailureLimiter::new(3, 0);
        let attacker: IpAddr = [10, 0, 0, 1].into();
        let bystander: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(limiter.is_allowed(attacker));
            limiter.record_failure(attacker);
        }
        assert!(!limiter.is_allowed(attacker));
        assert!(limiter.is_allowed(bystander));
    }
}
