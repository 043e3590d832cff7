//! Reading a certificate given to pin to a device: the PEM text is parsed by the TLS crate
//! (the same reading of certificates as the TLS listeners'), and the certificate must name
//! the device it is pinned to, as a login with it would.

use fleetwire_model::{DeviceId, Fingerprint, NewPinnedCertificate};

use crate::error::{Error, Result};

/// The pin of the one certificate in `pem`, checked against `device`: its subject's
/// common name must be the device id. [`Error::InvalidCertificate`] otherwise.
pub(crate) fn read_pin(device: &DeviceId, pem: &str) -> Result<NewPinnedCertificate> {
    let info = fleetwire_tls::parse_certificate_pem(pem).map_err(|error| {
        let mut detail = format!("certificate: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        Error::InvalidCertificate {
            detail,
            source: Some(Box::new(error)),
        }
    })?;
    if info.common_name.as_deref() != Some(device.as_str()) {
        let named = match &info.common_name {
            Some(common_name) => format!("names {common_name:?}"),
            None => format!("has no single common name (subject {:?})", info.subject),
        };
        return Err(Error::InvalidCertificate {
            detail: format!(
                "certificate: its subject {named}: expected the common name {:?}, the device's \
                 id (a device logs in with the certificate whose CN is its id)",
                device.as_str()
            ),
            source: None,
        });
    }
    Ok(NewPinnedCertificate {
        fingerprint: Fingerprint::from_bytes(*info.fingerprint.as_bytes()),
        common_name: info.common_name,
        not_after: Some(info.not_after.as_millis()),
    })
}
