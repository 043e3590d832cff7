//! Broker settings, already validated by the caller (the binary's config layer).

use std::time::Duration;

use fleetwire_mqtt_codec::TopicFilter;

use crate::limits::Limits;

/// How the broker behaves; every limit here is per client unless it says otherwise.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Accept clients without credentials, with full access (development and testing).
    pub allow_anonymous: bool,
    /// Largest packet accepted from a client, fixed header included. Checked from the
    /// fixed header, before the body is buffered.
    pub max_packet_size: usize,
    /// Messages waiting to be sent to one client (online or offline) before new ones are
    /// dropped and counted.
    pub max_queued_messages: usize,
    /// QoS 1/2 messages sent to one client and not yet acknowledged. A 5.0 client's
    /// smaller receive maximum wins.
    pub max_inflight: usize,
    /// Flow control: a publisher pauses while a connected subscriber's queue is past
    /// half its limit, for as long as that subscriber keeps reading. One whose connection
    /// writes nothing for this long is marked slow: its overflow is then dropped without
    /// holding anyone back, until it reads again.
    pub slow_consumer_grace: Duration,
    /// How long a new connection may take to send `CONNECT`.
    pub connect_timeout: Duration,
    /// How often `$SYS/broker/...` topics are published; zero disables them.
    pub sys_interval: Duration,
    /// Failed logins one source address may make in a row before it is slowed down.
    pub auth_failure_burst: u32,
    /// Failed logins per minute one source address may make after its burst.
    pub auth_failures_per_minute: u32,
    /// The kernel's send buffer of each client socket (`SO_SNDBUF`, which Linux doubles);
    /// `None` leaves it to the kernel's autotuning. Smaller buffers cap the memory a
    /// client that stops reading can hold in the kernel.
    pub socket_send_buffer: Option<usize>,
    /// Connections, connection rate, publish rate, subscriptions and queued bytes.
    pub limits: Limits,
    /// 5.0 topic aliases, per connection and direction: how many a client may set toward
    /// the broker (the Topic Alias Maximum of `CONNACK`), and the most the broker assigns
    /// toward a client that accepts them (fewer if the client's own maximum is lower).
    /// 0 turns topic aliases off.
    pub topic_alias_maximum: u16,
    /// 5.0 Receive Maximum: QoS 1/2 `PUBLISH`es a client may have sent and not yet seen
    /// acknowledged (QoS 1 until `PUBACK`, QoS 2 until `PUBCOMP`); one more closes the
    /// connection with `DISCONNECT` 0x93. At least 1.
    pub receive_maximum: u16,
    /// The longest keep-alive a 5.0 client may use, in seconds: a client asking for more
    /// (or for none) is told this one (`CONNACK` Server Keep Alive), and held to it.
    /// 0 accepts every client's keep-alive as it is, as does a 3.1.1 client's always
    /// (3.1.1 cannot be told another).
    pub max_keep_alive: u16,
    /// Topic filters no client may subscribe to, whoever it is: a subscription within
    /// one is refused (reason 0x80), and a broader one that could match their topics
    /// (`#`, `test/+`) is granted but never delivers a message on them. For topics
    /// only the platform or a bridge should read. Access control lists still apply.
    pub deny_subscribe: Vec<TopicFilter>,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            allow_anonymous: false,
            max_packet_size: 1024 * 1024,
            max_queued_messages: 1000,
            max_inflight: 32,
            slow_consumer_grace: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(10),
            sys_interval: Duration::from_secs(10),
            auth_failure_burst: 10,
            auth_failures_per_minute: 6,
            socket_send_buffer: None,
            limits: Limits::default(),
            topic_alias_maximum: 64,
            receive_maximum: 1024,
            max_keep_alive: 0,
            deny_subscribe: Vec::new(),
        }
    }
}
