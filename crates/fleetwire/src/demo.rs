//! `fleetwire demo`: a fleet a newcomer can watch within seconds. Registers the simulated
//! devices (with types and labels, so filters and rule matching have something to work
//! on), issues them credentials so they log in as devices (presence shows who is online),
//! creates the default rules, and runs the simulator against our own listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use fleetwire_model::{DeviceId, NewDevice, RuleAction, RuleId, RuleMatch, RuleSpec, Severity};
use fleetwire_platform::Platform;
use fleetwire_sim::{DeviceCredential, Devices, SimConfig, Simulator};

/// Sites the demo devices are spread over (the `site` label).
const SITES: [&str; 3] = ["lyon", "berlin", "oslo"];
/// How many credentials are issued at once (each is an argon2id hash: a core for ~20 ms).
const CREDENTIAL_BATCH: usize = 4;

/// The default rules: something to see within seconds (doors left open and humid rooms
/// are common in the simulated fleet, overheating spikes a few times a minute in 100
/// devices) and something rarer.
fn default_rules() -> Vec<(&'static str, RuleSpec)> {
    let rule =
        |name: &str, condition: &str, for_s: Option<i64>, clear: Option<&str>, severity| RuleSpec {
            name: name.to_owned(),
            matcher: RuleMatch::default(),
            condition: condition.to_owned(),
            for_ms: for_s.map(|seconds| seconds * 1000),
            clear: clear.map(str::to_owned),
            severity,
            actions: vec![RuleAction::Alarm],
            enabled: true,
        };
    vec![
        (
            "overheat",
            rule(
                "Overheating",
                "temperature > 30",
                Some(10),
                Some("temperature < 28"),
                Severity::High,
            ),
        ),
        (
            "battery-low",
            rule(
                "Battery low",
                "battery < 15",
                None,
                Some("battery > 20"),
                Severity::Medium,
            ),
        ),
        (
            "door-left-open",
            rule(
                "Door left open",
                "door_open == true",
                Some(60),
                None,
                Severity::Medium,
            ),
        ),
        (
            "humid",
            rule(
                "Humid room",
                "humidity > 58",
                Some(10),
                Some("humidity < 56"),
                Severity::Low,
            ),
        ),
    ]
}

/// Registers the demo devices and rules (those already there are kept) and returns fresh
/// credentials for every device.
pub(crate) async fn prepare(
    platform: &Platform,
    devices: usize,
) -> anyhow::Result<Vec<DeviceCredential>> {
    for (id, spec) in default_rules() {
        let id = RuleId::new(id).context("demo rule id")?;
        match platform.rule(&id).await {
            Ok(_) => {}
            Err(fleetwire_platform::Error::NotFound { .. }) => {
                platform
                    .create_rule(Some(id), spec)
                    .await
                    .context("cannot create the demo rules")?;
            }
            Err(error) => return Err(error).context("cannot read the demo rules"),
        }
    }
    let ids: Vec<DeviceId> = (1..=devices)
        .map(|number| DeviceId::new(format!("demo-{number:04}")))
        .collect::<Result<_, _>>()
        .context("demo device id")?;
    for (index, id) in ids.iter().enumerate() {
        let labels = BTreeMap::from([
            ("site".to_owned(), SITES[index % SITES.len()].to_owned()),
            (
                "floor".to_owned(),
                (index / SITES.len() % 4 + 1).to_string(),
            ),
        ]);
        let new = NewDevice {
            id: Some(id.clone()),
            name: Some(format!("Room sensor {}", index + 1)),
            device_type: Some("room-sensor".to_owned()),
            labels,
        };
        match platform.create_device(new).await {
            Ok(_) => {}
            Err(fleetwire_platform::Error::Conflict(_)) => {}
            Err(error) => return Err(error).context("cannot register the demo devices"),
        }
    }
    let mut credentials = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CREDENTIAL_BATCH) {
        let mut issuing = tokio::task::JoinSet::new();
        for id in chunk {
            let (platform, id) = (platform.clone(), id.clone());
            issuing.spawn(async move {
                let issued = platform.issue_credentials(&id).await;
                (id, issued.map(|(password, _)| password))
            });
        }
        while let Some(issued) = issuing.join_next().await {
            let (id, password) = issued.context("a credential task failed")?;
            credentials.push(DeviceCredential {
                device_id: id.as_str().to_owned(),
                password: password.context("cannot issue the demo devices' credentials")?,
            });
        }
    }
    // The simulator derives each device's signals from its position: keep it stable.
    credentials.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    Ok(credentials)
}

/// Starts the simulated fleet against our own listener; it stops with the node.
pub(crate) fn start_simulation(
    stopping: impl Future<Output = ()> + Send + 'static,
    mqtt_addr: SocketAddr,
    credentials: Vec<DeviceCredential>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let target = if mqtt_addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], mqtt_addr.port()))
    } else {
        mqtt_addr
    };
    let config = SimConfig {
        target,
        devices: Devices::Credentials(credentials),
        ramp_up: Duration::from_secs(2),
        ..SimConfig::default()
    };
    let simulator = Simulator::new(config).context("cannot set up the simulated fleet")?;
    Ok(tokio::spawn(async move {
        let report = simulator.run(stopping).await;
        tracing::info!(
            published = report.stats.published,
            "simulated fleet stopped"
        );
    }))
}

/// What the demo prints once it runs.
pub(crate) fn print_tour(
    mqtt_addr: SocketAddr,
    http_addr: SocketAddr,
    devices: usize,
    token: &str,
    tls: Option<TlsTour<'_>>,
) {
    let host = mqtt_addr.ip();
    let port = mqtt_addr.port();
    let http_host = if http_addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        http_addr.ip().to_string()
    };
    let http = format!("http://{http_host}:{}", http_addr.port());
    println!(
        "\nFleetwire demo is running: {devices} simulated room sensors (demo-0001, ...) publish \
         telemetry every second, and four rules watch them (overheating, battery, doors left \
         open, humid rooms).\n\n\
         Dashboard: {http}/\n\
         Log in with the admin token:\n  {token}\n\n\
         From another terminal:\n  \
         mosquitto_sub -h {host} -p {port} -t 'devices/+/telemetry' -v\n  \
         mosquitto_pub -h {host} -p {port} -t devices/d1/telemetry -m '{{\"temperature\": 35}}'\n  \
         curl -s -H 'Authorization: Bearer {token}' {http}/api/v1/alarms?status=open\n"
    );
    if let Some(tls) = tls {
        let ca = tls.ca_file.display();
        let (mqtts, https) = (tls.mqtt_addr.port(), tls.http_addr.port());
        let data_dir = tls.data_dir.display();
        println!(
            "Over TLS (the development CA is {ca}):\n  \
             mosquitto_sub --cafile {ca} -h localhost -p {mqtts} -t 'devices/+/telemetry' -v\n  \
             curl -s --cacert {ca} -H 'Authorization: Bearer {token}' https://localhost:{https}/api/v1/devices\n\
             A device logging in with a certificate instead of a password:\n  \
             fleetwire device cert demo-0001 --data-dir {data_dir} --out .\n  \
             mosquitto_pub --cafile {ca} --cert demo-0001.pem --key demo-0001.key -h localhost -p {mqtts} \
             -t devices/demo-0001/telemetry -m '{{\"temperature\": 35}}'\n\
             MQTT over WebSocket: ws://{http_host}:{}/mqtt and wss://localhost:{https}/mqtt\n",
            http_addr.port()
        );
    }
    println!("Press Ctrl-C to stop.\n");
}

/// What the tour says of the TLS listeners (`fleetwire demo --tls`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsTour<'a> {
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    pub(crate) ca_file: &'a std::path::Path,
    pub(crate) data_dir: &'a std::path::Path,
}
