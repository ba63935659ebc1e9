//! A POSIX access ACL entry for one more group on a file (`system.posix_acl_access`), so
//! that the control socket's directory and socket can be reached by a second group besides
//! their owning one.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt as _, path::Path};

const ACL_XATTR_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// The xattr value of an access ACL equivalent to `mode` plus `gid` with `perm` (rwx bits).
pub fn acl_with_group(mode: u32, gid: u32, perm: u16) -> Vec<u8> {
    let bits = |shift: u32| ((mode >> shift) & 7) as u16;
    let group_obj = bits(3);
    let entries = [
        (ACL_USER_OBJ, bits(6), ACL_UNDEFINED_ID),
        (ACL_GROUP_OBJ, group_obj, ACL_UNDEFINED_ID),
        (ACL_GROUP, perm & 7, gid),
        (ACL_MASK, group_obj | (perm & 7), ACL_UNDEFINED_ID),
        (ACL_OTHER, bits(0), ACL_UNDEFINED_ID),
    ];
    let mut v = ACL_XATTR_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Gives `gid` the permissions `perm` (rwx bits) on `path`, keeping its mode otherwise.
pub fn grant_group(path: &Path, mode: u32, gid: u32, perm: u16) -> io::Result<()> {
    let value = acl_with_group(mode, gid, perm);
    let path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated, and `value` is valid for its length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acl_keeps_the_mode_and_adds_the_group_under_the_mask() {
        let v = acl_with_group(0o750, 4343, 5);
        assert_eq!(v.len(), 4 + 5 * 8);
        assert_eq!(&v[..4], &[2, 0, 0, 0]);
        let entry = |i: usize| {
            let e = &v[4 + i * 8..12 + i * 8];
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        };
        assert_eq!(entry(0), (ACL_USER_OBJ, 7, u32::MAX));
        assert_eq!(entry(1), (ACL_GROUP_OBJ, 5, u32::MAX));
        assert_eq!(entry(2), (ACL_GROUP, 5, 4343));
        assert_eq!(entry(3), (ACL_MASK, 5, u32::MAX));
        assert_eq!(entry(4), (ACL_OTHER, 0, u32::MAX));
        // The socket: rw for owner, group and the extra group.
        let v = acl_with_group(0o660, 4343, 6);
        assert_eq!(&v[4 + 2 * 8 + 2..4 + 2 * 8 + 4], &[6, 0]);
    }
}
