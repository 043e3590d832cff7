//! One MQTT connection: the socket (whatever its [`crate::Transport`]), its read and
//! write buffers, the in-flight window and the keep-alive timer, all owned by the task
//! that drives it.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use fleetwire_mqtt_codec::{
    ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubAck, PubComp,
    PubRec, PubRel, Publish, QoS, SubAck, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
    UnsubAck, Unsubscribe, decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::{Instant, Sleep};

use crate::transport::Stream;
use crate::{Ack, ClientError, ConnectOptions, Message, PublishTemplate};

/// Something the server sent that the owner of the connection should know about.
/// Pings and the intermediate steps of QoS 2 are handled inside and never show up here.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An application message; its acknowledgement (QoS 1/2) is already queued.
    Publish(Message),
    /// A QoS 1 message of ours was acknowledged (check the reason on 5.0).
    PubAck(Ack),
    /// A QoS 2 message of ours was refused at `PUBREC` (reason 0x80 or above); a
    /// successful `PUBREC` is answered inside and completes as [`Event::PubComp`].
    PubRec(Ack),
    /// A QoS 2 message of ours completed.
    PubComp(Ack),
    /// Answer to a `SUBSCRIBE`.
    SubAck(Box<SubAck>),
    /// Answer to an `UNSUBSCRIBE`.
    UnsubAck(Box<UnsubAck>),
}

/// What [`Connection::progress`] stopped for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The server sent something.
    Event(Event),
    /// Everything queued before the call has been written; the sender may queue more.
    Drained,
}

/// An open MQTT connection. See the crate documentation for how it is driven.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    /// Bytes written into a TLS or WebSocket stream that a flush has not yet pushed to
    /// the socket (never set for TCP).
    is_unflushed: bool,
    version: ProtocolVersion,
    read_buffer: BytesMut,
    write_buffer: BytesMut,
    read_chunk: usize,
    max_packet_size: usize,
    keep_alive: Option<KeepAlive>,
    next_packet_id: PacketId,
    /// Packet ids of our QoS 1/2 messages not yet completed.
    /// foldhash: SipHash was a good part of a QoS 1 publish's cost in a simulator of a
    /// thousand devices, and these ids come from this client, not from an adversary.
    inflight: HashSet<u16, foldhash::fast::RandomState>,
    inflight_limit: usize,
    /// Events that arrived while [`Connection::subscribe_and_wait`] waited for its answer.
    held_events: VecDeque<Event>,
}

/// Keep-alive bookkeeping: a ping goes out after `interval` without writing, and the
/// connection fails if the answer takes another `interval`.
#[derive(Debug)]
struct KeepAlive {
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    last_write: Instant,
    ping_sent_at: Option<Instant>,
}

/// What woke the I/O loop; handled after the borrows of the poll end.
enum Wake {
    Wrote(usize),
    Flushed,
    Read(usize),
    Timer,
}

impl Connection {
    /// Opens a TCP connection, sends `CONNECT` and waits for `CONNACK`. A refusal is
    /// [`ClientError::Refused`].
    pub async fn connect(options: &ConnectOptions) -> Result<(Connection, ConnAck), ClientError> {
        match tokio::time::timeout(options.connect_timeout, Connection::handshake(options)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::ConnectTimeout {
                addr: options.addr,
                seconds: options.connect_timeout.as_secs(),
            }),
        }
    }

    async fn handshake(options: &ConnectOptions) -> Result<(Connection, ConnAck), ClientError> {
        let addr = options.addr;
        let failed = |source: io::Error| ClientError::Connect { addr, source };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(failed)?;
        if let Some(local) = options.local_addr {
            socket.bind(SocketAddr::new(local, 0)).map_err(failed)?;
        }
        let tcp = socket.connect(addr).await.map_err(failed)?;
        tcp.set_nodelay(options.is_nodelay).map_err(failed)?;
        let read_chunk = options.read_chunk.max(64);
        let stream = Stream::open(tcp, addr, &options.transport, read_chunk).await?;

        let keep_alive_secs = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let mut properties = Properties::default();
        if options.version.is_v5() {
            properties.maximum_packet_size = u32::try_from(options.max_packet_size).ok();
        }
        let connect = Connect {
            protocol: options.version,
            clean_start: options.clean_start,
            keep_alive: keep_alive_secs,
            client_id: options.client_id.clone(),
            will: None,
            username: options.username.clone(),
            password: options.password.clone(),
            properties,
        };
        let mut connection = Connection {
            stream,
            is_unflushed: false,
            version: options.version,
            read_buffer: BytesMut::with_capacity(read_chunk),
            write_buffer: BytesMut::new(),
            read_chunk,
            max_packet_size: options.max_packet_size,
            keep_alive: None,
            next_packet_id: PacketId::new(1).unwrap_or_else(|| unreachable!("1 is not 0")),
            inflight: HashSet::default(),
            inflight_limit: options.max_inflight.clamp(1, usize::from(u16::MAX)),
            held_events: VecDeque::new(),
        };
        connection.queue(&Packet::Connect(Box::new(connect)))?;
        connection.flush().await?;
        let connack = loop {
            if let Some(packet) = connection.decode_next()? {
                match packet {
                    Packet::ConnAck(connack) => break connack,
                    other => {
                        return Err(ClientError::UnexpectedPacket {
                            got: other.packet_type(),
                            expected: "CONNACK",
                        });
                    }
                }
            }
            connection.read_more().await?;
        };
        if connack.code.is_error() {
            return Err(ClientError::Refused(connack.code));
        }
        if let Some(receive_maximum) = connack.properties.receive_maximum {
            connection.inflight_limit = connection
                .inflight_limit
                .min(usize::from(receive_maximum).max(1));
        }
        let interval = match connack.properties.server_keep_alive {
            Some(seconds) => Duration::from_secs(u64::from(seconds)),
            None => Duration::from_secs(u64::from(keep_alive_secs)),
        };
        if !interval.is_zero() {
            let now = Instant::now();
            connection.keep_alive = Some(KeepAlive {
                interval,
                timer: Box::pin(tokio::time::sleep_until(now + interval)),
                last_write: now,
                ping_sent_at: None,
            });
        }
        Ok((connection, connack))
    }

    /// The protocol version of this connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// QoS 1/2 messages sent and not yet completed.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// The most QoS 1/2 messages that may be in flight at once.
    pub fn inflight_limit(&self) -> usize {
        self.inflight_limit
    }

    /// Whether a QoS 1/2 message can be sent now.
    pub fn has_window(&self) -> bool {
        self.inflight.len() < self.inflight_limit
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered(&self) -> usize {
        self.write_buffer.len()
    }

    /// Queues a `PUBLISH`. Returns its packet id for QoS 1/2, or
    /// [`ClientError::InflightWindowFull`] (nothing queued) when the window is full.
    pub fn publish(
        &mut self,
        topic: &TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<Option<PacketId>, ClientError> {
        let packet_id = self.packet_id_for(qos)?;
        let packet = Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: topic.clone(),
            packet_id,
            payload,
            properties: Properties::default(),
        });
        if let Err(error) = self.queue(&packet) {
            if let Some(packet_id) = packet_id {
                self.inflight.remove(&packet_id.get());
            }
            return Err(error);
        }
        Ok(packet_id)
    }

    /// Queues one copy of a pre-encoded `PUBLISH`, letting `fill` rewrite its payload in
    /// place (a timestamp, a sequence number). Same window rules as
    /// [`Connection::publish`]. The template must have been made for this connection's
    /// protocol version.
    pub fn publish_template(
        &mut self,
        template: &PublishTemplate,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Option<PacketId>, ClientError> {
        let packet_id = self.packet_id_for(template.qos())?;
        template.write_to(&mut self.write_buffer, packet_id, fill);
        Ok(packet_id)
    }

    /// Queues a `SUBSCRIBE` and returns its packet id; the answer arrives as
    /// [`Event::SubAck`].
    pub fn subscribe(&mut self, filters: &[(TopicFilter, QoS)]) -> Result<PacketId, ClientError> {
        let packet_id = self.next_free_packet_id();
        let packet = Packet::Subscribe(Subscribe {
            packet_id,
            filters: filters
                .iter()
                .map(|(filter, qos)| (filter.clone(), SubscriptionOptions::with_qos(*qos)))
                .collect(),
            properties: Properties::default(),
        });
        self.queue(&packet)?;
        Ok(packet_id)
    }

    /// Subscribes and waits for the `SUBACK`. Messages that arrive meanwhile are kept for
    /// [`Connection::next_event`].
    pub async fn subscribe_and_wait(
        &mut self,
        filters: &[(TopicFilter, QoS)],
    ) -> Result<SubAck, ClientError> {
        let packet_id = self.subscribe(filters)?;
        loop {
            match self.progress().await? {
                Progress::Event(Event::SubAck(suback)) if suback.packet_id == packet_id => {
                    return Ok(*suback);
                }
                Progress::Event(other) => self.held_events.push_back(other),
                Progress::Drained => {}
            }
        }
    }

    /// Queues an `UNSUBSCRIBE` and returns its packet id; the answer arrives as
    /// [`Event::UnsubAck`].
    pub fn unsubscribe(&mut self, filters: &[TopicFilter]) -> Result<PacketId, ClientError> {
        let packet_id = self.next_free_packet_id();
        self.queue(&Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters: filters.to_vec(),
            properties: Properties::default(),
        }))?;
        Ok(packet_id)
    }

    /// Writes everything queued. Does not read meanwhile, so use it for small amounts
    /// (a server blocked on writing to us may stop reading); bulk senders drive the
    /// connection with [`Connection::progress`] instead.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        while !self.write_buffer.is_empty() {
            let written = self.stream.write_buf(&mut self.write_buffer).await?;
            self.after_write(written)?;
        }
        if self.is_unflushed {
            self.stream.flush().await?;
            self.is_unflushed = false;
        }
        Ok(())
    }

    /// Sends `DISCONNECT` (normal) and closes the socket.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.queue(&Packet::Disconnect(Disconnect::default()))?;
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    /// Closes the socket with a reset instead of the usual handshake, so no port lingers
    /// in `TIME_WAIT` (load generators opening many connections use this).
    pub fn abort(self) {
        // SO_LINGER with a zero timeout makes close() send RST; an error only means the
        // socket is already gone.
        let _ = self.stream.tcp().set_zero_linger();
    }

    /// Waits for the next event from the server, writing queued bytes, answering pings
    /// and acknowledging messages meanwhile. Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Progress::Event(event) = self.progress().await? {
                return Ok(event);
            }
        }
    }

    /// Like [`Connection::next_event`], but also returns [`Progress::Drained`] once the
    /// bytes queued before the call are all written, so a sender can queue the next
    /// batch. Cancel-safe.
    pub async fn progress(&mut self) -> Result<Progress, ClientError> {
        if let Some(event) = self.held_events.pop_front() {
            return Ok(Progress::Event(event));
        }
        let had_output = !self.write_buffer.is_empty();
        loop {
            while let Some(packet) = self.decode_next()? {
                if let Some(event) = self.handle(packet)? {
                    return Ok(Progress::Event(event));
                }
            }
            if had_output && self.write_buffer.is_empty() && !self.is_unflushed {
                return Ok(Progress::Drained);
            }
            self.reserve_read_space();
            match self.wake().await? {
                Wake::Wrote(written) => self.after_write(written)?,
                Wake::Flushed => self.is_unflushed = false,
                Wake::Read(0) => return Err(ClientError::Closed),
                Wake::Read(_) => {}
                Wake::Timer => self.on_keep_alive_timer()?,
            }
        }
    }

    /// Waits until writing (or flushing) makes progress, bytes arrive or the keep-alive
    /// timer fires, in that order of preference. One poll of the one stream does all
    /// three, so reading and writing need no split halves and work alike over TCP, TLS
    /// and WebSocket; TCP costs what a `select!` over split halves did.
    fn wake(&mut self) -> impl Future<Output = io::Result<Wake>> + '_ {
        let Connection {
            stream,
            is_unflushed,
            read_buffer,
            write_buffer,
            keep_alive,
            ..
        } = self;
        std::future::poll_fn(move |cx| {
            if !write_buffer.is_empty() {
                if let Poll::Ready(written) = Pin::new(&mut *stream).poll_write(cx, write_buffer) {
                    let written = written?;
                    write_buffer.advance(written);
                    return Poll::Ready(Ok(Wake::Wrote(written)));
                }
            } else if *is_unflushed {
                if let Poll::Ready(flushed) = Pin::new(&mut *stream).poll_flush(cx) {
                    flushed?;
                    return Poll::Ready(Ok(Wake::Flushed));
                }
            }
            // A `read_buf` future holds no state between polls, so a new one each time
            // reads like a kept one would.
            if let Poll::Ready(read) = pin!(stream.read_buf(&mut *read_buffer)).poll(cx) {
                return Poll::Ready(read.map(Wake::Read));
            }
            if let Some(keep_alive) = keep_alive {
                if keep_alive.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Wake::Timer));
                }
            }
            Poll::Pending
        })
    }

    fn after_write(&mut self, written: usize) -> Result<(), ClientError> {
        if written == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero).into());
        }
        if self.stream.is_buffered() {
            self.is_unflushed = true;
        }
        if let Some(keep_alive) = &mut self.keep_alive {
            keep_alive.last_write = Instant::now();
        }
        Ok(())
    }

    fn on_keep_alive_timer(&mut self) -> Result<(), ClientError> {
        let Some(keep_alive) = &mut self.keep_alive else {
            return Ok(());
        };
        let now = Instant::now();
        let next = match keep_alive.ping_sent_at {
            Some(sent) if now >= sent + keep_alive.interval => {
                return Err(ClientError::KeepAliveTimeout);
            }
            Some(sent) => sent + keep_alive.interval,
            None if now >= keep_alive.last_write + keep_alive.interval => {
                keep_alive.ping_sent_at = Some(now);
                encode(&Packet::PingReq, self.version, &mut self.write_buffer)?;
                now + keep_alive.interval
            }
            None => keep_alive.last_write + keep_alive.interval,
        };
        keep_alive.timer.as_mut().reset(next);
        Ok(())
    }

    fn reserve_read_space(&mut self) {
        if self.read_buffer.capacity() - self.read_buffer.len() < self.read_chunk / 4 {
            self.read_buffer.reserve(self.read_chunk);
        }
    }

    async fn read_more(&mut self) -> Result<(), ClientError> {
        self.reserve_read_space();
        if self.stream.read_buf(&mut self.read_buffer).await? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    fn decode_next(&mut self) -> Result<Option<Packet>, ClientError> {
        Ok(decode(
            &mut self.read_buffer,
            self.version,
            self.max_packet_size,
        )?)
    }

    fn queue(&mut self, packet: &Packet) -> Result<(), ClientError> {
        Ok(encode(packet, self.version, &mut self.write_buffer)?)
    }

    fn packet_id_for(&mut self, qos: QoS) -> Result<Option<PacketId>, ClientError> {
        if qos == QoS::AtMostOnce {
            return Ok(None);
        }
        if !self.has_window() {
            return Err(ClientError::InflightWindowFull(self.inflight_limit));
        }
        let packet_id = self.next_free_packet_id();
        self.inflight.insert(packet_id.get());
        Ok(Some(packet_id))
    }

    /// The next packet id not used by an in-flight message. The window is far smaller
    /// than the id space, so this ends after a few steps.
    fn next_free_packet_id(&mut self) -> PacketId {
        loop {
            let candidate = self.next_packet_id;
            self.next_packet_id = candidate.next();
            if !self.inflight.contains(&candidate.get()) {
                return candidate;
            }
        }
    }

    /// Applies one packet from the server; what the owner should see is returned.
    fn handle(&mut self, packet: Packet) -> Result<Option<Event>, ClientError> {
        let event = match packet {
            Packet::Publish(publish) => {
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => self.queue(&Packet::PubAck(PubAck::new(id)))?,
                    (QoS::ExactlyOnce, Some(id)) => self.queue(&Packet::PubRec(PubRec::new(id)))?,
                    _ => {}
                }
                Some(Event::Publish(Message::from_publish(
                    publish,
                    self.version.is_v5(),
                )))
            }
            Packet::PubAck(ack) => {
                self.inflight.remove(&ack.packet_id.get());
                Some(Event::PubAck(Ack {
                    packet_id: ack.packet_id,
                    reason: ack.reason,
                }))
            }
            Packet::PubRec(rec) => {
                if rec.reason.is_error() {
                    self.inflight.remove(&rec.packet_id.get());
                    Some(Event::PubRec(Ack {
                        packet_id: rec.packet_id,
                        reason: rec.reason,
                    }))
                } else {
                    self.queue(&Packet::PubRel(PubRel::new(rec.packet_id)))?;
                    None
                }
            }
            Packet::PubRel(release) => {
                self.queue(&Packet::PubComp(PubComp::new(release.packet_id)))?;
                None
            }
            Packet::PubComp(complete) => {
                self.inflight.remove(&complete.packet_id.get());
                Some(Event::PubComp(Ack {
                    packet_id: complete.packet_id,
                    reason: complete.reason,
                }))
            }
            Packet::SubAck(suback) => Some(Event::SubAck(Box::new(suback))),
            Packet::UnsubAck(unsuback) => Some(Event::UnsubAck(Box::new(unsuback))),
            Packet::PingResp => {
                if let Some(keep_alive) = &mut self.keep_alive {
                    keep_alive.ping_sent_at = None;
                }
                None
            }
            Packet::Disconnect(disconnect) => {
                return Err(ClientError::Disconnected(disconnect.reason));
            }
            other @ (Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Auth(_)) => {
                return Err(ClientError::UnexpectedPacket {
                    got: other.packet_type(),
                    expected: "a packet a server sends after CONNACK",
                });
            }
        };
        Ok(event)
    }
}
