//! Who a certificate names: the [`Fingerprint`] (SHA-256 of its DER), the client identity
//! a handshake yields ([`ClientCertificate`]), and what the pinning API shows of a pasted
//! certificate ([`CertificateInfo`]).

use std::fmt;
use std::str::FromStr;

use fleetwire_time::Timestamp;
use rustls_pki_types::pem::SectionKind;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;

use crate::error::Error;

/// The SHA-256 digest of a certificate's DER encoding: what `openssl x509 -fingerprint
/// -sha256` prints. Shown as 64 lowercase hexadecimal digits; parsed from hexadecimal in
/// either case, with or without `:` between the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of the certificate `der`.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(formatter, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(text: &str) -> Result<Fingerprint, Error> {
        let invalid = || Error::InvalidFingerprint {
            text: text.to_owned(),
        };
        let pairs: Vec<&[u8]> = if text.contains(':') {
            text.as_bytes().split(|&byte| byte == b':').collect()
        } else {
            text.as_bytes().chunks(2).collect()
        };
        if pairs.len() != 32 {
            return Err(invalid());
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(pairs) {
            let [high, low] = pair else {
                return Err(invalid());
            };
            *byte = (hex_digit(*high).ok_or_else(invalid)? << 4)
                | hex_digit(*low).ok_or_else(invalid)?;
        }
        Ok(Fingerprint(bytes))
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

/// The identity a client proved in its handshake: the certificate's subject common name
/// (the device id, not yet checked against the registry) and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's common name (CN).
    pub common_name: String,
    /// The SHA-256 of the certificate's DER.
    pub fingerprint: Fingerprint,
}

/// The identity of the client of `connection`, from its certificate (the first the peer
/// sent), after a completed handshake. `Ok(None)` when the client presented none (or none
/// was asked for: no client CA); an error when the certificate, verified against the
/// client CA, cannot be parsed or does not have exactly one text common name: it names no
/// device, and the caller should refuse the connection and log why.
pub fn client_certificate(
    connection: &rustls::ServerConnection,
) -> Result<Option<ClientCertificate>, Error> {
    let Some(der) = connection
        .peer_certificates()
        .and_then(|certificates| certificates.first())
    else {
        return Ok(None);
    };
    let certificate = parse_der(der, "the client certificate")?;
    let common_name = single_common_name(&certificate).ok_or_else(|| Error::CommonName {
        subject: certificate.subject().to_string(),
    })?;
    Ok(Some(ClientCertificate {
        common_name: common_name.to_owned(),
        fingerprint: Fingerprint::of(der),
    }))
}

/// What the API shows of a certificate given as PEM (to pin it to a device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The SHA-256 of the certificate's DER.
    pub fingerprint: Fingerprint,
    /// The subject's common name, if it has exactly one that is text.
    pub common_name: Option<String>,
    /// The subject, as `CN=..., O=...`.
    pub subject: String,
    /// The issuer, as `CN=..., O=...`.
    pub issuer: String,
    /// Valid from (to the second).
    pub not_before: Timestamp,
    /// Valid until (to the second).
    pub not_after: Timestamp,
}

/// Reads the one certificate in `pem` (other sections, such as a key, are ignored).
/// Errors: [`Error::NotPem`] (no PEM section at all), [`Error::Pem`] (a damaged
/// section), [`Error::NoCertificateInText`], [`Error::SeveralCertificates`],
/// [`Error::InvalidCertificate`] (the section is not X.509).
pub fn parse_certificate_pem(pem: &str) -> Result<CertificateInfo, Error> {
    if !pem.contains("-----BEGIN ") {
        return Err(Error::NotPem);
    }
    let mut reader = pem.as_bytes();
    let mut certificates = Vec::new();
    loop {
        match rustls_pki_types::pem::from_buf(&mut reader) {
            Ok(Some((SectionKind::Certificate, der))) => certificates.push(der),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(source) => {
                return Err(Error::Pem {
                    what: "the text".to_owned(),
                    source,
                });
            }
        }
    }
    let der = match certificates.as_slice() {
        [] => return Err(Error::NoCertificateInText),
        [der] => der,
        several => {
            return Err(Error::SeveralCertificates {
                count: several.len(),
            });
        }
    };
    let certificate = parse_der(der, "the text")?;
    let validity = certificate.validity();
    Ok(CertificateInfo {
        fingerprint: Fingerprint::of(der),
        common_name: single_common_name(&certificate).map(str::to_owned),
        subject: certificate.subject().to_string(),
        issuer: certificate.issuer().to_string(),
        not_before: seconds(validity.not_before.timestamp()),
        not_after: seconds(validity.not_after.timestamp()),
    })
}

fn parse_der<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_rest, certificate)| certificate)
        .map_err(|source| Error::InvalidCertificate {
            what: what.to_owned(),
            source: source.into(),
        })
}

fn single_common_name<'a>(certificate: &'a X509Certificate<'_>) -> Option<&'a str> {
    let mut names = certificate.subject().iter_common_name();
    let name = names.next()?.as_str().ok()?;
    match names.next() {
        Some(_) => None,
        None => Some(name),
    }
}

fn seconds(seconds: i64) -> Timestamp {
    Timestamp::from_millis(seconds.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_as_lowercase_hex_and_parse_back_with_or_without_colons() {
        let fingerprint = Fingerprint::of(b"certificate");
        let text = fingerprint.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<Fingerprint>().ok(), Some(fingerprint));
        assert_eq!(
            text.to_uppercase().parse::<Fingerprint>().ok(),
            Some(fingerprint)
        );
        let colons = fingerprint
            .0
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(colons.parse::<Fingerprint>().ok(), Some(fingerprint));
    }

    #[test]
    fn fingerprints_of_the_wrong_shape_are_refused() {
        let text = Fingerprint::of(b"x").to_string();
        for bad in [
            "",
            &text[..62],
            &format!("{text}00"),
            &format!("{}zz", &text[..62]),
            &format!(":{}", &text[..63]),
            "a:bc:de",
            &format!("{}+{}", &text[..1], &text[2..]),
        ] {
            assert!(
                matches!(
                    bad.parse::<Fingerprint>(),
                    Err(Error::InvalidFingerprint { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
