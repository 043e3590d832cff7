//! One simulated device: connect, publish a reading every interval, reconnect with
//! backoff when the connection fails, disconnect on stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetwire_client::{ClientError, ConnectOptions, Connection, Event};
use fleetwire_model::{DeviceId, DeviceTopic};
use fleetwire_mqtt_codec::{QoS, TopicName};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::signals::{SignalGenerator, SplitMix64};
use crate::{Devices, SimConfig, SimCounters, SimError};

/// A connection that lived this long resets the backoff: the failure was not at connect.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// How long a stopping device waits for its `DISCONNECT` to be written.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Room for one telemetry payload (about 100 bytes).
const PAYLOAD_CAPACITY: usize = 128;

/// Everything one device needs that differs between devices.
#[derive(Debug)]
pub(crate) struct DeviceSpec {
    index: u64,
    device_id: String,
    password: Option<String>,
    topic: TopicName,
    start_delay: Duration,
}

/// Validates the configuration and lays out the devices.
pub(crate) fn plan(config: &SimConfig) -> Result<Vec<DeviceSpec>, SimError> {
    if config.interval.is_zero() {
        return Err(SimError::InvalidConfig(
            "the publish interval must be more than zero".to_owned(),
        ));
    }
    if config.qos == QoS::ExactlyOnce {
        return Err(SimError::InvalidConfig(
            "devices publish with QoS 0 or 1, not 2".to_owned(),
        ));
    }
    let identities: Vec<(String, Option<String>)> = match &config.devices {
        Devices::Anonymous { count, prefix } => {
            let width = count.to_string().len().max(4);
            (1..=*count)
                .map(|number| (format!("{prefix}{number:0width$}"), None))
                .collect()
        }
        Devices::Credentials(credentials) => credentials
            .iter()
            .map(|c| (c.device_id.clone(), Some(c.password.clone())))
            .collect(),
    };
    if identities.is_empty() {
        return Err(SimError::InvalidConfig(
            "at least one device is needed".to_owned(),
        ));
    }
    let count = identities.len() as u32;
    identities
        .into_iter()
        .enumerate()
        .map(|(index, (device_id, password))| {
            // The contract's topic, built where every device topic is (the model).
            let topic = DeviceId::new(device_id.as_str())
                .map(|id| DeviceTopic::telemetry(&id))
                .map_err(|error| SimError::InvalidConfig(error.to_string()))?;
            Ok(DeviceSpec {
                index: index as u64,
                device_id,
                password,
                topic,
                start_delay: config
                    .ramp_up
                    .mul_f64(f64::from(index as u32) / f64::from(count)),
            })
        })
        .collect()
}

/// Runs one device until `stop` turns true.
pub(crate) async fn run(
    spec: DeviceSpec,
    config: Arc<SimConfig>,
    counters: Arc<SimCounters>,
    mut stop: watch::Receiver<bool>,
) {
    if !sleep_unless_stopped(spec.start_delay, &mut stop).await {
        return;
    }
    let options = ConnectOptions {
        addr: config.target,
        client_id: spec.device_id.clone(),
        version: config.version,
        keep_alive: config.keep_alive,
        username: spec.password.as_ref().map(|_| spec.device_id.clone()),
        password: spec
            .password
            .as_ref()
            .map(|password| Bytes::from(password.clone().into_bytes())),
        max_inflight: 32,
        read_chunk: 1024,
        ..ConnectOptions::default()
    };
    let mut generator = SignalGenerator::new(config.seed, spec.index);
    let mut jitter = SplitMix64::new(config.seed ^ spec.index.rotate_left(17) ^ 0x5EED);
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            result = Connection::connect(&options) => result,
            () = stopped(&mut stop) => return,
        };
        match attempt {
            Ok((connection, _)) => {
                counters.connected();
                let since = Instant::now();
                let outcome = session(
                    connection,
                    &spec,
                    &config,
                    &counters,
                    &mut generator,
                    &mut jitter,
                    &mut stop,
                )
                .await;
                counters.disconnected();
                match outcome {
                    Ok(()) => return,
                    Err(error) => counters.error(format!("{}: {error}", spec.device_id)),
                }
                if since.elapsed() >= STABLE_CONNECTION {
                    failures = 0;
                }
            }
            Err(error) => counters.error(format!("{}: {error}", spec.device_id)),
        }
        failures = failures.saturating_add(1);
        counters.reconnecting();
        let delay = config
            .backoff
            .delay(failures)
            .mul_f64(0.5 + 0.5 * jitter.unit());
        tracing::debug!(device = %spec.device_id, ?delay, "reconnecting");
        if !sleep_unless_stopped(delay, &mut stop).await {
            return;
        }
    }
}

/// Publishes until the connection fails (`Err`) or the simulation stops (`Ok`).
async fn session(
    mut connection: Connection,
    spec: &DeviceSpec,
    config: &SimConfig,
    counters: &SimCounters,
    generator: &mut SignalGenerator,
    jitter: &mut SplitMix64,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ClientError> {
    // A random phase keeps devices that connected together from publishing together.
    let phase = config.interval.mul_f64(jitter.unit());
    let mut ticker = tokio::time::interval_at(Instant::now() + phase, config.interval);
    // A device that was late (its task waited for a CPU) catches up, so the fleet offers
    // the configured rate on average; with `Delay` every late tick pushed the schedule
    // back for good, and a busy machine quietly got less load than asked for. A tick the
    // in-flight window refuses is counted as an error, not retried.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    // One wait for the stop signal for the whole session: a new one per loop turn would
    // register with the shared channel (and unregister) on every message.
    let stopped = stopped(stop);
    tokio::pin!(stopped);
    // Payloads are written into one buffer whose memory is reused once the connection
    // has copied the message out.
    let mut payloads = BytesMut::with_capacity(PAYLOAD_CAPACITY);
    let mut acks = AckTimer::default();
    let outcome = loop {
        tokio::select! {
            () = &mut stopped => {
                let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, connection.disconnect()).await;
                break Ok(());
            }
            _ = ticker.tick() => {
                let reading = generator.sample(unix_millis());
                payloads.reserve(PAYLOAD_CAPACITY);
                reading.write_json(&mut payloads);
                let payload: Bytes = payloads.split().freeze();
                match connection.publish(&spec.topic, payload, config.qos, false) {
                    Ok(packet_id) => {
                        counters.published();
                        if let Some(packet_id) = packet_id {
                            acks.sent(packet_id.get());
                        }
                    }
                    Err(ClientError::InflightWindowFull(limit)) => counters.error(format!(
                        "{}: {limit} messages wait for PUBACK, reading skipped", spec.device_id
                    )),
                    Err(error) => break Err(error),
                }
            }
            event = connection.next_event() => match event {
                Ok(Event::PubAck(ack)) => {
                    acks.acknowledged(ack.packet_id.get(), spec.index, counters);
                    if ack.reason.is_error() {
                        counters.rejected(format!(
                            "{}: broker refused a message with reason code {:#04x}",
                            spec.device_id, ack.reason.0
                        ));
                    } else {
                        counters.acknowledged();
                    }
                }
                // Commands arrive here once devices subscribe to them; nothing else
                // is expected.
                Ok(_) => {}
                Err(error) => break Err(error),
            },
        }
    };
    acks.flush(spec.index, counters);
    outcome
}

/// Times QoS 1 messages from publish to `PUBACK`. A broker acknowledges QoS 1 messages in
/// the order it received them, so the oldest unacknowledged one is nearly always at the
/// front.
#[derive(Debug, Default)]
struct AckTimer {
    /// Packet id and send time of each message in flight, oldest first.
    in_flight: VecDeque<(u16, Instant)>,
    /// Times (microseconds) not yet handed to the shared histogram.
    pending: Vec<u64>,
}

impl AckTimer {
    /// Samples kept locally before they go to the shared histogram.
    const BATCH: usize = 64;

    fn sent(&mut self, packet_id: u16) {
        self.in_flight.push_back((packet_id, Instant::now()));
    }

    fn acknowledged(&mut self, packet_id: u16, device: u64, counters: &SimCounters) {
        let position = match self.in_flight.front() {
            Some((front, _)) if *front == packet_id => Some(0),
            _ => self.in_flight.iter().position(|(id, _)| *id == packet_id),
        };
        if let Some((_, sent)) = position.and_then(|index| self.in_flight.remove(index)) {
            self.pending
                .push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
            if self.pending.len() >= Self::BATCH {
                self.flush(device, counters);
            }
        }
    }

    fn flush(&mut self, device: u64, counters: &SimCounters) {
        counters.record_ack_latencies(device, &self.pending);
        self.pending.clear();
    }
}

fn unix_millis() -> i64 {
    fleetwire_time::Timestamp::now().as_millis()
}

/// Completes when the simulation stops (or its controller is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|is_stopped| *is_stopped).await;
}

/// Sleeps for `delay`; `false` if the simulation stopped first.
async fn sleep_unless_stopped(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if delay.is_zero() {
        return !*stop.borrow();
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => !*stop.borrow(),
        () = stopped(stop) => false,
    }
}
