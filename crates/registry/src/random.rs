//! Random ids and secrets from the operating system's random source, and their text forms.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Error, Result};

/// `N` bytes from the operating system's random source.
pub(crate) fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(|error| Error::Internal {
        // getrandom's errors are not `std::error::Error` without its `std` feature.
        context: format!("the operating system's random source: {error}"),
        source: None,
    })?;
    Ok(bytes)
}

/// `N` random bytes as lowercase hex (`2 * N` characters).
pub(crate) fn hex<const N: usize>() -> Result<String> {
    Ok(to_hex(&bytes::<N>()?))
}

/// 32 random bytes (256 bits) as unpadded base64url: 43 characters, safe in URLs, MQTT
/// passwords and shell arguments.
pub(crate) fn secret() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(bytes::<32>()?))
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}
