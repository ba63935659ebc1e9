//! Replacing the file: atomically, keeping its mode, leaving nothing behind.

use std::{
    fs::{self, Permissions},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
};

use super::{FILE, host};
use crate::config::{
    edit::{ConfigDoc, EditError},
    hosts::HostPolicy,
};

/// A directory of its own under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "forwarder-config-edit-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn write_atomic_replaces_the_file_and_keeps_its_mode() {
    let dir = Scratch::new("write");
    let path = dir.0.join("forwarder.toml");
    fs::write(&path, FILE).unwrap();
    fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
    let mut d = ConfigDoc::open(&path).unwrap();
    d.add_host(&host("shop.example.com", HostPolicy::Drop))
        .unwrap();
    d.write_atomic().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), d.text());
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(dir.entries(), ["forwarder.toml"]);
    let again = ConfigDoc::open(&path).unwrap();
    assert!(!again.changed());
    assert_eq!(
        again.file_config().unwrap().hosts[2],
        host("shop.example.com", HostPolicy::Drop)
    );

    // Through a link, the file it points to is replaced and the link stays.
    let link = dir.0.join("link.toml");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let mut d = ConfigDoc::open(&link).unwrap();
    d.remove_host("shop.example.com").unwrap();
    d.write_atomic().unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), FILE);
    assert_eq!(dir.entries(), ["forwarder.toml", "link.toml"]);
}

#[test]
fn failed_writes_leave_the_original_and_no_temporary_file() {
    let dir = Scratch::new("fail");
    // No such directory: nothing is created.
    let missing = dir.0.join("missing").join("forwarder.toml");
    let d = ConfigDoc::parse(&missing, FILE).unwrap();
    let e = d.write_atomic().unwrap_err();
    assert!(matches!(e, EditError::Write { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot write {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    // The rename fails (a directory is in the way) after the temporary file is
    // written: it is removed again.
    let path = dir.0.join("forwarder.toml");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), "x").unwrap();
    let d = ConfigDoc::parse(&path, FILE).unwrap();
    let e = d.write_atomic().unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot write {}: ", path.display())),
        "{e}"
    );
    assert_eq!(dir.entries(), ["forwarder.toml"]);
    assert_eq!(fs::read_to_string(path.join("keep")).unwrap(), "x");
    fs::remove_dir_all(&path).unwrap();

    // Something that is not ours holds the temporary name: it is left alone, and so
    // is the original.
    fs::write(&path, FILE).unwrap();
    let blocker = dir
        .0
        .join(format!(".forwarder.toml.tmp-{}", std::process::id()));
    fs::create_dir(&blocker).unwrap();
    let mut d = ConfigDoc::open(&path).unwrap();
    d.remove_host("app.example.com").unwrap();
    assert!(d.write_atomic().is_err());
    assert_eq!(fs::read_to_string(&path).unwrap(), FILE);
    assert!(blocker.is_dir());
    fs::remove_dir(&blocker).unwrap();

    // A stale temporary file of ours is replaced.
    fs::write(&blocker, "stale").unwrap();
    d.write_atomic().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), d.text());
    assert_eq!(dir.entries(), ["forwarder.toml"]);
}
