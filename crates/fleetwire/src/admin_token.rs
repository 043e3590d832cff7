//! The bootstrap admin API token: created on first start, printed once, kept in
//! `<data-dir>/admin.token` with mode 0600.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// The file name of the token inside the data directory.
const FILE_NAME: &str = "admin.token";

/// How the token came to be, so the caller can say so once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Given by configuration (`FLEETWIRE_ADMIN_TOKEN`).
    Configured,
    /// Read from the data directory.
    Existing,
    /// Generated now; must be shown to the user this once.
    Created,
}

/// Returns the admin token, creating and storing one on first start.
pub(crate) fn ensure(
    data_dir: &Path,
    configured: Option<&str>,
) -> anyhow::Result<(String, Origin)> {
    if let Some(token) = configured {
        return Ok((token.to_owned(), Origin::Configured));
    }
    let path = data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.is_empty() {
                anyhow::bail!(
                    "{} is empty; delete it to generate a new token",
                    path.display()
                );
            }
            return Ok((token, Origin::Existing));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = generate()?;
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((token, Origin::Created))
}

fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("no system randomness: {error}"))?;
    let mut token = String::from("fw_");
    for byte in bytes {
        token.push_str(&format!("{byte:02x}"));
    }
    Ok(token)
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{token}")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_a_private_token_and_later_starts_reuse_it() {
        let dir = std::env::temp_dir().join(format!("fleetwire-token-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (created, origin) = ensure(&dir, None).unwrap();
        assert_eq!(origin, Origin::Created);
        assert!(created.starts_with("fw_") && created.len() == 67);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, origin) = ensure(&dir, None).unwrap();
        assert_eq!(
            (again.as_str(), origin),
            (created.as_str(), Origin::Existing)
        );
        let (configured, origin) = ensure(&dir, Some("from-the-environment-0123")).unwrap();
        assert_eq!(
            (configured.as_str(), origin),
            ("from-the-environment-0123", Origin::Configured)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
