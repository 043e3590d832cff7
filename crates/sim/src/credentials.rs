//! Device credentials read from a file: one device per line, as CSV (`device_id,password`;
//! the first comma splits, so passwords may contain commas; fields may be double-quoted)
//! or as JSON lines (`{"device_id": "...", "password": "..."}`).
//!
//! Blank lines and lines starting with `#` are skipped, and so is a CSV header line
//! (`device_id,password`, `id,password` or `username,password`). JSON lines also accept
//! `id` or `username` for the device id, matching what `POST
//! /api/v1/devices/{id}/credentials` answers. The parser is small and strict rather than
//! a general CSV or JSON reader: a line it cannot read is an error naming the line.

use std::path::Path;

use crate::SimError;

/// A device's MQTT login: Fleetwire devices use their id as user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// Device id, used as client id and user name.
    pub device_id: String,
    /// The device secret, used as password.
    pub password: String,
}

/// Reads and parses a credentials file.
pub fn read_credentials(path: &Path) -> Result<Vec<DeviceCredential>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::CredentialsFile {
        path: path.to_owned(),
        source,
    })?;
    parse_credentials(&text).map_err(|(line, detail)| SimError::CredentialsSyntax {
        path: path.to_owned(),
        line,
        detail,
    })
}

/// Parses the text of a credentials file; an error carries the 1-based line number and
/// what is wrong there.
pub fn parse_credentials(text: &str) -> Result<Vec<DeviceCredential>, (usize, String)> {
    let mut credentials = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let credential = if line.starts_with('{') {
            parse_json_line(line).map_err(|detail| (number, detail))?
        } else {
            let Some((id, password)) = line.split_once(',') else {
                return Err((
                    number,
                    "expected `device_id,password` or a JSON object".to_owned(),
                ));
            };
            let (id, password) = (unquote(id.trim()), unquote(password.trim()));
            if credentials.is_empty()
                && matches!(id, "device_id" | "id" | "username")
                && password == "password"
            {
                continue;
            }
            DeviceCredential {
                device_id: id.to_owned(),
                password: password.to_owned(),
            }
        };
        if credential.device_id.is_empty() {
            return Err((number, "the device id is empty".to_owned()));
        }
        if credential.device_id.contains(['/', '+', '#']) {
            return Err((
                number,
                format!(
                    "device id {:?} contains `/`, `+` or `#`, which cannot appear in its topics",
                    credential.device_id
                ),
            ));
        }
        credentials.push(credential);
    }
    Ok(credentials)
}

fn unquote(field: &str) -> &str {
    field
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(field)
}

/// Reads a flat JSON object of string values (escapes `\"`, `\\`, `\/`, `\n`, `\t`
/// and `\uXXXX` are understood).
fn parse_json_line(line: &str) -> Result<DeviceCredential, String> {
    let mut chars = line.chars().peekable();
    let mut device_id = None;
    let mut password = None;
    let expect = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, wanted: char| {
        skip_space(chars);
        match chars.next() {
            Some(found) if found == wanted => Ok(()),
            Some(found) => Err(format!("expected `{wanted}`, found `{found}`")),
            None => Err(format!("expected `{wanted}`, the line ended")),
        }
    };
    expect(&mut chars, '{')?;
    skip_space(&mut chars);
    if chars.peek() == Some(&'}') {
        chars.next();
    } else {
        loop {
            skip_space(&mut chars);
            let key = json_string(&mut chars)?;
            expect(&mut chars, ':')?;
            skip_space(&mut chars);
            let value = json_string(&mut chars)
                .map_err(|detail| format!("value of {key:?}: {detail} (values must be strings)"))?;
            match key.as_str() {
                "device_id" | "id" | "username" => device_id = Some(value),
                "password" | "secret" => password = Some(value),
                _ => {}
            }
            skip_space(&mut chars);
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                Some(found) => return Err(format!("expected `,` or `}}`, found `{found}`")),
                None => return Err("expected `,` or `}`, the line ended".to_owned()),
            }
        }
    }
    skip_space(&mut chars);
    if let Some(found) = chars.next() {
        return Err(format!(
            "expected the line to end after `}}`, found `{found}`"
        ));
    }
    Ok(DeviceCredential {
        device_id: device_id.ok_or("expected a \"device_id\" key")?,
        password: password.ok_or("expected a \"password\" key")?,
    })
}

fn skip_space(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
}

fn json_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    match chars.next() {
        Some('"') => {}
        Some(found) => return Err(format!("expected a string, found `{found}`")),
        None => return Err("expected a string, the line ended".to_owned()),
    }
    let mut text = String::new();
    loop {
        match chars.next() {
            Some('"') => return Ok(text),
            Some('\\') => match chars.next() {
                Some('"') => text.push('"'),
                Some('\\') => text.push('\\'),
                Some('/') => text.push('/'),
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("invalid escape \\u{hex}"))?;
                    text.push(code);
                }
                Some(other) => return Err(format!("unsupported escape \\{other}")),
                None => return Err("the line ended inside a string".to_owned()),
            },
            Some(other) => text.push(other),
            None => return Err("the line ended inside a string".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(id: &str, password: &str) -> DeviceCredential {
        DeviceCredential {
            device_id: id.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn csv_with_header_comments_and_blank_lines() {
        let text = "# fleet A\ndevice_id,password\n\nd1,s3cret\n \"d2\" , \"p,w\"\n";
        // The first comma splits, so a password may contain commas.
        assert_eq!(
            parse_credentials(text).unwrap(),
            vec![credential("d1", "s3cret"), credential("d2", "p,w")]
        );
    }

    #[test]
    fn json_lines_with_any_id_key_and_escapes() {
        let text = "{\"device_id\": \"d1\", \"password\": \"a\\\"b\"}\n{\"username\":\"d2\",\"password\":\"\\u00e9\",\"extra\":\"x\"}\n";
        assert_eq!(
            parse_credentials(text).unwrap(),
            vec![credential("d1", "a\"b"), credential("d2", "é")]
        );
    }

    #[test]
    fn mixed_formats_are_accepted() {
        let text = "d1,p1\n{\"id\":\"d2\",\"password\":\"p2\"}\n";
        assert_eq!(
            parse_credentials(text).unwrap(),
            vec![credential("d1", "p1"), credential("d2", "p2")]
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse_credentials("d1,p1\nnocomma\n").unwrap_err().0, 2);
        assert_eq!(
            parse_credentials("{\"device_id\":\"d1\"}").unwrap_err(),
            (1, "expected a \"password\" key".to_owned())
        );
        assert_eq!(parse_credentials("{\"device_id\":1}").unwrap_err().0, 1);
        assert_eq!(parse_credentials("a/b,p\n").unwrap_err().0, 1);
        assert_eq!(parse_credentials(",p\n").unwrap_err().0, 1);
    }
}
