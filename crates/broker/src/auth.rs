//! Who may connect, and what a connected client may do.
//!
//! The broker does not know where credentials live: it asks the [`Authenticator`] of the
//! listener's hooks and gets back an [`Access`]: everything, or a user's access control
//! list, the topic filters it may publish to and subscribe within. The broker enforces
//! that list for every `PUBLISH`, `SUBSCRIBE` and will, and knows nothing of what the
//! filters mean to whoever made them. Failed logins are rate-limited per source address
//! before the authenticator is asked, so guessing costs the guesser, not the broker.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use fleetwire_mqtt_codec::{ReasonCode, TopicFilter, TopicName};
use parking_lot::Mutex;

/// What a connected client may do.
///
/// One pointer wide: it is kept by every connection, parked ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everything: anonymous clients when `allow_anonymous` is set, and clients of a
    /// listener without an authenticator.
    Full,
    /// A logged-in user, limited to its access control list.
    User(Arc<UserAccess>),
}

/// A user's name and access control list: the topic filters it may publish to and
/// those it may subscribe within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAccess {
    name: Arc<str>,
    publish: Box<[TopicFilter]>,
    subscribe: Box<[TopicFilter]>,
}

impl UserAccess {
    /// The MQTT user name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The filters of the topics the user may publish to.
    pub fn publish(&self) -> &[TopicFilter] {
        &self.publish
    }

    /// The filters the user may subscribe within.
    pub fn subscribe(&self) -> &[TopicFilter] {
        &self.subscribe
    }
}

impl Access {
    /// The access of user `name`: it may publish to topics that one of `publish`
    /// matches, and subscribe to filters within one of `subscribe` (see
    /// [`TopicFilter::is_within`]). No filters, no rights.
    pub fn user(
        name: impl Into<Arc<str>>,
        publish: impl IntoIterator<Item = TopicFilter>,
        subscribe: impl IntoIterator<Item = TopicFilter>,
    ) -> Access {
        Access::User(Arc::new(UserAccess {
            name: name.into(),
            publish: publish.into_iter().collect(),
            subscribe: subscribe.into_iter().collect(),
        }))
    }

    /// The user this access belongs to, if any.
    pub fn user_name(&self) -> Option<&Arc<str>> {
        match self {
            Access::Full => None,
            Access::User(user) => Some(&user.name),
        }
    }

    /// Whether a `PUBLISH` (or will) to `topic` is allowed: one of the user's publish
    /// filters matches it.
    pub fn may_publish(&self, topic: &TopicName) -> bool {
        match self {
            Access::Full => true,
            Access::User(user) => user.publish.iter().any(|filter| filter.matches(topic)),
        }
    }

    /// Whether a subscription to `filter` is allowed: every topic it can match is
    /// matched by one of the user's subscribe filters. Shared subscriptions are judged
    /// by the filter they match.
    pub fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        match self {
            Access::Full => true,
            Access::User(user) => user
                .subscribe
                .iter()
                .any(|allowed| filter.is_within(allowed)),
        }
    }
}

/// What a client presented in `CONNECT`.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The client identifier (may be empty).
    pub client_id: &'a str,
    /// The MQTT user name.
    pub username: Option<&'a str>,
    /// The password. Never log it.
    pub password: Option<&'a [u8]>,
    /// Where the connection comes from.
    pub peer: SocketAddr,
    /// The TLS client certificate the client proved it holds (its chain was verified
    /// during the TLS handshake), if it presented one.
    pub certificate: Option<&'a PeerCertificate>,
}

/// A verified TLS client certificate, as the broker hands it to the [`Authenticator`]:
/// who it names and which certificate it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's common name.
    pub common_name: String,
    /// The SHA-256 digest of the certificate (DER).
    pub fingerprint: [u8; 32],
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

/// Decides who may connect, and hears when users come and go.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the credentials of a `CONNECT` that carries a user name or comes with a
    /// client certificate (other clients are anonymous, and only `allow_anonymous`
    /// admits them).
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Access, Denial>>;

    /// A user's first connection opened (`online`) or its last one closed. Anonymous
    /// connections count as the user an [`Ingest`](crate::Ingest) names for them
    /// ([`Settled::acting_as`](crate::Settled::acting_as)). Called from the connection's
    /// task: must not block.
    fn presence(&self, user: &str, online: bool);
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

    fn filters(texts: &[&str]) -> Vec<TopicFilter> {
        texts
            .iter()
            .map(|text| TopicFilter::new(*text).unwrap())
            .collect()
    }

    /// A user `u1` who may publish anywhere under `users/u1/` (not `users/u1` itself) and
    /// subscribe within `inbox/u1/#`.
    fn access_of_u1() -> Access {
        Access::user("u1", filters(&["users/u1/+/#"]), filters(&["inbox/u1/#"]))
    }

    #[test]
    fn a_user_publishes_only_where_its_filters_match() {
        let access = access_of_u1();
        let table = [
            ("users/u1/status", true),
            ("users/u1/a/b/c", true),
            ("users/u1", false),
            ("users/u10/status", false),
            ("users/u2/status", false),
            ("other/u1/status", false),
        ];
        for (topic, expected) in table {
            let topic = TopicName::new(topic).unwrap();
            assert_eq!(access.may_publish(&topic), expected, "{topic}");
            assert!(Access::Full.may_publish(&topic), "{topic}");
        }
    }

    #[test]
    fn a_user_subscribes_only_within_its_filters() {
        let access = access_of_u1();
        let table = [
            ("inbox/u1/#", true),
            ("inbox/u1", true),
            ("inbox/u1/+", true),
            ("inbox/u1/mail", true),
            ("$share/g/inbox/u1/#", true),
            ("inbox/#", false),
            ("inbox/u1X", false),
            ("inbox/+/#", false),
            ("inbox/u10/#", false),
            ("#", false),
            ("$share/g/#", false),
        ];
        for (filter, expected) in table {
            let filter = TopicFilter::new(filter).unwrap();
            assert_eq!(access.may_subscribe(&filter), expected, "{filter}");
        }
    }

    #[test]
    fn an_access_stays_one_pointer_wide() {
        assert_eq!(size_of::<Access>(), size_of::<usize>());
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
