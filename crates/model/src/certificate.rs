//! Client certificates pinned to a device: the [`Fingerprint`] that names a certificate
//! (SHA-256 of its DER, checked and written in one place) and the [`PinnedCertificate`]
//! record. A device with pinned certificates logs in over TLS only with one of them; a
//! device without any, with any certificate its CA issued for it.

use std::fmt;

use fleetwire_time::TimestampMs;

use crate::error::Error;

/// The SHA-256 digest of a certificate's DER encoding, written as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint([u8; 32]);

/// The text forms [`Fingerprint::parse`] takes, as a regular expression (for documents
/// that restate the check): 64 hex digits, or 32 pairs of them separated by `:`.
pub const FINGERPRINT_PATTERN: &str = "^(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31})$";

impl Fingerprint {
    /// The fingerprint of these digest bytes.
    pub fn from_bytes(digest: [u8; 32]) -> Fingerprint {
        Fingerprint(digest)
    }

    /// Reads a fingerprint written as 64 hex digits, or as 32 pairs of hex digits
    /// separated by `:` (as `openssl x509 -fingerprint -sha256` prints it), in either
    /// case.
    pub fn parse(text: &str) -> Result<Fingerprint, Error> {
        let refuse = || {
            Error::Invalid(format!(
                "certificate fingerprint {text:?}: expected the SHA-256 digest as 64 hex \
                 digits, or 32 pairs of hex digits separated by \":\""
            ))
        };
        let bytes = text.as_bytes();
        let is_paired = bytes.contains(&b':');
        if (is_paired && bytes.len() != 95) || (!is_paired && bytes.len() != 64) {
            return Err(refuse());
        }
        let mut digest = [0; 32];
        for (index, byte) in digest.iter_mut().enumerate() {
            let start = if is_paired { index * 3 } else { index * 2 };
            if is_paired && index > 0 && bytes[start - 1] != b':' {
                return Err(refuse());
            }
            let (Some(high), Some(low)) = (hex_value(bytes[start]), hex_value(bytes[start + 1]))
            else {
                return Err(refuse());
            };
            *byte = high << 4 | low;
        }
        Ok(Fingerprint(digest))
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// 64 lowercase hex digits, the form the registry stores and the API shows.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A client certificate pinned to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedCertificate {
    /// Which certificate.
    pub fingerprint: Fingerprint,
    /// Its subject's common name, when it has one.
    pub common_name: Option<String>,
    /// When it stops being valid, when known.
    pub not_after: Option<TimestampMs>,
    /// When it was pinned.
    pub added_at: TimestampMs,
}

/// What `pin_certificate` stores: a certificate's identity, read from the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPinnedCertificate {
    /// Which certificate.
    pub fingerprint: Fingerprint,
    /// Its subject's common name, when it has one.
    pub common_name: Option<String>,
    /// When it stops being valid.
    pub not_after: Option<TimestampMs>,
}

#[cfg(test)]
mod tests {
    use super::Fingerprint;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_fingerprint_reads_hex_in_either_case_with_or_without_colons() {
        let plain = Fingerprint::parse(HEX).expect("plain hex");
        assert_eq!(plain.to_string(), HEX);
        assert_eq!(plain.as_bytes()[1], 0x11);
        assert_eq!(
            Fingerprint::parse(&HEX.to_uppercase()).expect("upper case"),
            plain
        );
        let paired = HEX
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(Fingerprint::parse(&paired).expect("paired"), plain);
    }

    #[test]
    fn a_fingerprint_refuses_other_text() {
        let too_short = &HEX[..62];
        let not_hex = format!("{}zz", &HEX[..62]);
        let misplaced_colon = format!("0:{}", &HEX[..63]);
        let paired = HEX
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let paired_wrong = paired.replacen(':', "x", 1);
        let doubled_colon = paired.replacen(':', "::", 1);
        for text in [
            "",
            too_short,
            &not_hex,
            &misplaced_colon,
            &paired_wrong,
            &doubled_colon,
        ] {
            let error = Fingerprint::parse(text).expect_err(text);
            assert!(error.to_string().contains("expected"), "{error}");
        }
    }
}
