//! Atomic replacement of a small file (temp file + fsync + rename), mode 0600.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// What [`write_atomic`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Permission bits of the file it replaced (`None` if the file did not exist).
    pub previous_mode: Option<u32>,
    /// Whether the replaced file's owner and group were kept (always true for new files).
    pub owner_preserved: bool,
}

impl WriteOutcome {
    /// Whether the replaced file was readable by other users (`o+r`).
    pub fn was_world_readable(&self) -> bool {
        self.previous_mode.is_some_and(|m| m & 0o004 != 0)
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Replace `path` with `contents` atomically: write a temporary file in the same
/// directory with mode 0600, fsync it, rename it over `path`, fsync the directory.
///
/// If `path` exists, its owner and group are kept when the process may do so (so a file
/// owned by the broker's user stays readable by it after root edits it). A symlink is
/// followed and its target replaced. Readers see either the old or the new file, never
/// a partial one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<WriteOutcome> {
    let target: PathBuf = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_owned(),
    };
    let previous = match fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_and_rename(&tmp, &target, contents, previous.as_ref());
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let owner_preserved = result?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(WriteOutcome {
        previous_mode: previous.map(|m| m.mode() & 0o7777),
        owner_preserved,
    })
}

fn write_and_rename(
    tmp: &Path,
    target: &Path,
    contents: &[u8],
    previous: Option<&fs::Metadata>,
) -> io::Result<bool> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    file.set_permissions(Permissions::from_mode(0o600))?;
    let mut owner_preserved = true;
    if let Some(m) = previous {
        if std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid())).is_err() {
            owner_preserved = false;
        }
    }
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, target)?;
    Ok(owner_preserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_new_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        let out = write_atomic(&p, b"hello\n").unwrap();
        assert_eq!(out.previous_mode, None);
        assert!(!out.was_world_readable());
        assert_eq!(fs::read(&p).unwrap(), b"hello\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn replaces_world_readable_file_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        let out = write_atomic(&p, b"new").unwrap();
        assert_eq!(out.previous_mode, Some(0o644));
        assert!(out.was_world_readable());
        assert!(out.owner_preserved);
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn follows_symlink_and_replaces_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn missing_directory_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("pw");
        assert!(write_atomic(&p, b"x").is_err());
        assert!(!p.exists());
    }
}
