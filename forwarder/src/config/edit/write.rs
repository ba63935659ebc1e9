//! Replacing the file with the edited document, atomically and durably.

use std::{
    fs::{self, File, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use tempfile::{NamedTempFile, TempPath};

use crate::config::edit::{ConfigDoc, EditError};

impl ConfigDoc {
    /// Replaces the file with the edited text: a temporary file `.<name>.tmp-<pid>` in
    /// the same directory, flushed, given the original's permissions, renamed over the
    /// original, and the directory flushed so the rename itself is durable. On any error
    /// before the rename the original is untouched and the temporary file is gone;
    /// [`EditError::Sync`] alone means the new text is in place, just not yet durable.
    /// A symbolic link is followed: the file it points to is replaced, the link stays.
    ///
    /// Callers make one edit at a time: two writers in one process share the temporary
    /// file name.
    pub fn write_atomic(&self) -> Result<(), EditError> {
        let failed = |source| EditError::Write {
            path: self.path.clone(),
            source,
        };
        let target = match fs::canonicalize(&self.path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.path.clone(),
            Err(e) => return Err(failed(e)),
        };
        let Some(name) = target.file_name() else {
            return Err(failed(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            )));
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mode = match fs::metadata(&target) {
            Ok(m) => Some(m.permissions().mode() & 0o7777),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(failed(e)),
        };
        // Removes the file on every way out but the rename, a panic included. A file under
        // that name is ours (see `create_temp`), so it may go even if the creation fails;
        // a directory there is not, and `remove_file` leaves it.
        let tmp = TempPath::try_from_path(dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        )))
        .map_err(failed)?;
        let file = create_temp(&tmp, mode.is_some()).map_err(failed)?;
        let mut file = NamedTempFile::from_parts(file, tmp);
        // Through the `File`: `NamedTempFile`'s own writes add its path to the message.
        let written = (|| {
            let f = file.as_file_mut();
            f.write_all(self.text().as_bytes())?;
            if let Some(mode) = mode {
                f.set_permissions(Permissions::from_mode(mode))?;
            }
            f.sync_all()
        })();
        written.map_err(failed)?;
        file.persist(&target).map_err(|e| failed(e.error))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| EditError::Sync {
                path: self.path.clone(),
                source,
            })
    }
}

/// A leftover from an earlier attempt of this process id (a crash, a recycled pid) is in
/// the way and is ours to replace; anything else under that name (a directory) is not.
///
/// Not `tempfile::Builder`: the name is fixed (see [`ConfigDoc::write_atomic`]), and the
/// builder's errors name the temporary file where the user is to see the OS's own message
/// about the file they named.
fn create_temp(tmp: &Path, restricted: bool) -> io::Result<File> {
    // Until it has the original's mode, the copy is readable by the owner only: the
    // original may be private.
    let mode = if restricted { 0o600 } else { 0o644 };
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            create()
        }
        r => r,
    }
}
