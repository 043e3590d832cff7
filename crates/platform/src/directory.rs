//! What the platform remembers of devices on its hot paths: that a device exists, and
//! its type and labels (which rules match it). Backed by the registry, which stays the
//! source of truth: a miss asks it, and unknown devices are registered on first data when
//! the configuration allows it (anonymous MQTT, line protocol from collectors).

use std::collections::HashMap;
use std::sync::Arc;

use fleetwire_model::{Device, DeviceId, DeviceInfo, NewDevice};
use fleetwire_registry::Registry;
use parking_lot::RwLock;

use crate::error::{Error, Result};

/// The cache of known devices in front of the registry.
pub(crate) struct Directory {
    registry: Registry,
    /// foldhash: randomly seeded like SipHash, cheaper on short ids; looked up for every
    /// telemetry message.
    known: RwLock<HashMap<Arc<str>, Arc<DeviceInfo>, foldhash::fast::RandomState>>,
    /// Serializes registrations, so two first messages of one device create it once.
    registering: tokio::sync::Mutex<()>,
}

impl Directory {
    pub(crate) fn new(registry: Registry) -> Directory {
        Directory {
            registry,
            known: RwLock::new(HashMap::default()),
            registering: tokio::sync::Mutex::new(()),
        }
    }

    /// The device, from memory when it was seen before.
    pub(crate) fn cached(&self, id: &str) -> Option<Arc<DeviceInfo>> {
        self.known.read().get(id).cloned()
    }

    /// The device, asking the registry on a miss; registers it when it is unknown and
    /// `may_register` is set, else answers [`Error::NotFound`].
    pub(crate) async fn resolve(&self, id: &str, may_register: bool) -> Result<Arc<DeviceInfo>> {
        if let Some(info) = self.cached(id) {
            return Ok(info);
        }
        let device_id = DeviceId::new(id)
            .map_err(|error| Error::InvalidDevice(format!("device id {id:?}: {error}")))?;
        match self.registry.device(&device_id).await {
            Ok(device) => return Ok(self.remember(&device)),
            Err(fleetwire_registry::Error::NotFound { .. }) if may_register => {}
            Err(error) => return Err(error.into()),
        }
        let _registering = self.registering.lock().await;
        if let Some(info) = self.cached(id) {
            return Ok(info);
        }
        let created = self
            .registry
            .create_device(NewDevice {
                id: Some(device_id.clone()),
                ..NewDevice::default()
            })
            .await;
        let device = match created {
            Ok(device) => {
                tracing::info!(device = %device.id, "registered a device on its first data");
                device
            }
            // Created meanwhile by the API or another node.
            Err(fleetwire_registry::Error::AlreadyExists(_)) => {
                self.registry.device(&device_id).await?
            }
            Err(error) => return Err(error.into()),
        };
        Ok(self.remember(&device))
    }

    /// Remembers (or refreshes) what the registry says of a device.
    pub(crate) fn remember(&self, device: &Device) -> Arc<DeviceInfo> {
        let info = Arc::new(DeviceInfo::from(device));
        self.known
            .write()
            .insert(Arc::from(info.id.as_str()), Arc::clone(&info));
        info
    }

    /// Forgets a device (deleted, or changed: the next use reads it again).
    pub(crate) fn forget(&self, id: &str) {
        self.known.write().remove(id);
    }
}
