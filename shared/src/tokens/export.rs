//! Writes the current access token to a provider's `export_file` atomically, so the app that
//! reads it never sees a partial or an empty token: a temporary file in the same directory,
//! created with the final mode (never wider), written, fsynced, given its owner, renamed over
//! the target, and the directory fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

/// Writes `token` (and a newline) to `path` with `mode`, owned by `owner` if given.
///
/// # Errors
/// The IO error of the step that failed; the temporary file is removed. Messages name the
/// path, never the token.
pub fn write_atomically(
    path: &Path,
    token: &SecretString,
    mode: u32,
    owner: Option<(u32, Option<u32>)>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("the export file has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the export file has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(token.expose_secret().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), gid)?;
        }
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_replaces_the_file_with_mode_0600_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("upkeep-export-{}", uuid::Uuid::new_v4()));
        fs::create_dir(&dir).unwrap();
        let path = dir.join("crm-token");
        fs::write(&path, "old\n").unwrap();

        write_atomically(
            &path,
            &SecretString::from("new-token".to_owned()),
            0o600,
            None,
        )
        .unwrap();

        assert_eq!(fs::read_to_string(&path).unwrap(), "new-token\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
