//! The two text rules every record shares: plain names (ids, command names: 1-128
//! characters of `[A-Za-z0-9_.-]`, safe as an MQTT topic level and a URL path segment) and
//! free text (bounded, no control characters).

use crate::error::Error;

/// Whether `text` is 1-128 characters of `[A-Za-z0-9_.-]`: the syntax of every id, and of
/// command names (safe in an MQTT topic level and in a URL path segment).
pub fn is_plain_name(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
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
    use super::{check_plain_name, check_text, is_plain_name};

    #[test]
    fn plain_names_are_short_and_safe_in_topics_and_paths() {
        for name in ["d1", "boiler-7", "a.b_c-D", &"x".repeat(128)] {
            assert!(is_plain_name(name), "{name}");
        }
        for name in ["", "a/b", "a+b", "a#", "é", "a b", &"x".repeat(129)] {
            assert!(!is_plain_name(name), "{name}");
        }
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
