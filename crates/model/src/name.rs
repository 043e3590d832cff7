//! The two text rules every record shares: plain names (ids, command names: 1-128
//! characters of `[A-Za-z0-9_.-]`, safe as an MQTT topic level and a URL path segment) and
//! free text (bounded, no control characters).

use crate::error::Error;

/// Longest plain name, in characters (ASCII: also in bytes).
pub const PLAIN_NAME_MAX_LEN: usize = 128;

/// The plain-name rule as a regular expression (for JSON Schema), the length aside.
pub const PLAIN_NAME_PATTERN: &str = "^[A-Za-z0-9_.-]+$";

/// [`is_plain_name_prefix`] as a regular expression, the length aside.
pub const PLAIN_NAME_PREFIX_PATTERN: &str = "^[A-Za-z0-9_.-]*$";

/// Whether `byte` may appear in a plain name: `[A-Za-z0-9_.-]`.
pub fn is_plain_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-')
}

/// Whether `text` is 1-128 characters of `[A-Za-z0-9_.-]`: the syntax of every id, and of
/// command names (safe in an MQTT topic level and in a URL path segment).
pub fn is_plain_name(text: &str) -> bool {
    (1..=PLAIN_NAME_MAX_LEN).contains(&text.len()) && text.bytes().all(is_plain_name_byte)
}

/// Whether `text` can begin a plain name: at most 128 of its characters, possibly none.
pub fn is_plain_name_prefix(text: &str) -> bool {
    text.len() <= PLAIN_NAME_MAX_LEN && text.bytes().all(is_plain_name_byte)
}

/// Checks that `text` is a plain name; the error names it as `what` (`device id`,
/// `command name`).
pub fn check_plain_name(what: &str, text: &str) -> Result<(), Error> {
    if is_plain_name(text) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {text:?}: expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
        )))
    }
}

/// Checks a free-text field: `min` to `max` characters, none of them control characters
/// (PostgreSQL refuses NUL in text, and a newline in a name only breaks displays).
pub fn check_text(what: &str, value: &str, min: usize, max: usize) -> Result<(), Error> {
    let chars = value.chars().count();
    if chars < min || chars > max {
        let expected = if min == 0 {
            format!("at most {max}")
        } else {
            format!("{min}-{max}")
        };
        return Err(Error::Invalid(format!(
            "{what}: expected {expected} characters, got {chars}"
        )));
    }
    if let Some(control) = value.chars().find(|c| c.is_control()) {
        return Err(Error::Invalid(format!(
            "{what}: expected no control characters, got {control:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_plain_name, check_text, is_plain_name, is_plain_name_prefix};

    #[test]
    fn plain_names_are_short_and_safe_in_topics_and_paths() {
        for name in ["d1", "boiler-7", "a.b_c-D", &"x".repeat(128)] {
            assert!(is_plain_name(name), "{name}");
        }
        for name in ["", "a/b", "a+b", "a#", "é", "a b", &"x".repeat(129)] {
            assert!(!is_plain_name(name), "{name}");
        }
        assert!(is_plain_name_prefix(""));
        assert!(is_plain_name_prefix("boiler-"));
        assert!(!is_plain_name_prefix("boiler/"));
        assert!(!is_plain_name_prefix(&"x".repeat(129)));
        assert_eq!(
            check_plain_name("command name", "a/b")
                .unwrap_err()
                .to_string(),
            "command name \"a/b\": expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
        );
    }

    #[test]
    fn free_text_is_bounded_and_has_no_control_characters() {
        assert!(check_text("name", "Boiler room", 0, 256).is_ok());
        assert_eq!(
            check_text("name", "", 1, 8).unwrap_err().to_string(),
            "name: expected 1-8 characters, got 0"
        );
        assert_eq!(
            check_text("name", "a\nb", 0, 8).unwrap_err().to_string(),
            "name: expected no control characters, got '\\n'"
        );
    }
}
