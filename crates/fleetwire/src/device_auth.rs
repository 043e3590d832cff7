//! The registry as the broker's authenticator: MQTT user name = device id, password =
//! the device secret; devices get the platform's device access (their own topics), and
//! their presence is recorded (and published on the platform's live stream).
//!
//! Glue only: the broker knows nothing of the registry, the registry nothing of MQTT.

use fleetwire_broker::{Access, Authenticator, BoxFuture, Credentials, Denial};
use fleetwire_model::DeviceId;
use fleetwire_platform::{Platform, device_access};
use fleetwire_registry::Registry;

/// Checks device credentials against the registry.
pub(crate) struct RegistryAuthenticator {
    registry: Registry,
    platform: Platform,
}

impl RegistryAuthenticator {
    pub(crate) fn new(registry: Registry, platform: Platform) -> RegistryAuthenticator {
        RegistryAuthenticator { registry, platform }
    }
}

impl Authenticator for RegistryAuthenticator {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Access, Denial>> {
        Box::pin(async move {
            // A user name that cannot be a device id, or no password, cannot match.
            let (Some(Ok(device)), Some(password)) = (
                credentials.username.map(DeviceId::new),
                credentials.password,
            ) else {
                return Err(Denial::BadCredentials);
            };
            match self.registry.verify_device_secret(&device, password).await {
                Ok(true) => Ok(device_access(&device)),
                Ok(false) => Err(Denial::BadCredentials),
                Err(error) => {
                    tracing::error!(%device, %error, "cannot check device credentials");
                    Err(Denial::Unavailable)
                }
            }
        })
    }

    fn presence(&self, device: &str, online: bool) {
        if let Ok(id) = DeviceId::new(device) {
            self.registry.record_presence(&id, online, now_ms());
            self.platform.presence(device, online);
        }
    }
}

fn now_ms() -> i64 {
    fleetwire_time::Timestamp::now().as_millis()
}
