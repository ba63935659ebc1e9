//! The data path's home on bpffs: every map and link is pinned under
//! `<root>/v<PIN_LAYOUT_VERSION>/`, so the programs keep forwarding when the daemon exits
//! (a crash, `kill -9`, an upgrade) and the next daemon adopts the maps, flows and counters
//! and swaps its programs in atomically.

use std::{
    ffi::CString,
    io,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::maps::MapInfo;
use forwarder_common::{PIN_LAYOUT_VERSION, PINNED_MAPS};
use tracing::{info, warn};

/// Where the data path is pinned unless told otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/forwarder";
/// The bpffs mount point systemd (and most distributions) use.
const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Which link a pin holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Xdp,
    TcIngress,
}

/// The versioned pin directory of this build's map layout.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
    dir: PathBuf,
}

impl PinDir {
    /// Makes sure `root` is on a bpffs (mounting one on /sys/fs/bpf if nothing is there,
    /// as systemd would at boot), creates the versioned directory and removes what older
    /// layout versions left behind (their maps cannot be adopted; their links would hold
    /// the interfaces).
    pub fn prepare(root: &Path) -> anyhow::Result<Self> {
        ensure_bpffs(root)?;
        create_private_dir(root)?;
        let current = format!("v{PIN_LAYOUT_VERSION}");
        for entry in
            std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy() != current && entry.path().is_dir() {
                warn!(
                    old = %entry.path().display(),
                    "removing a data path pinned by a daemon with another map layout: its connections are not carried over"
                );
                remove_tree(&entry.path())?;
            }
        }
        let dir = root.join(current);
        create_private_dir(&dir)?;
        Ok(Self {
            root: root.to_owned(),
            dir,
        })
    }

    /// Opens `root` without changing anything (for `forwarder stop --detach`).
    pub fn existing(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            dir: root.join(format!("v{PIN_LAYOUT_VERSION}")),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link_path(&self, kind: LinkKind, iface: &str) -> PathBuf {
        let prefix = match kind {
            LinkKind::Xdp => "link_xdp_",
            LinkKind::TcIngress => "link_tc_ingress_",
        };
        self.dir.join(format!("{prefix}{iface}"))
    }

    /// Whether an earlier daemon left a data path here.
    pub fn has_state(&self) -> bool {
        PINNED_MAPS.iter().any(|m| self.map_path(m).exists())
    }

    /// Checks that every pinned map matches what the kernel object declares (type, key
    /// and value size, capacity). A mismatch means the pins came from a build with another
    /// layout under the same version number: refuse rather than misread them.
    pub fn check_layouts(&self, object: &[u8]) -> anyhow::Result<()> {
        let obj = aya_obj::Object::parse(object).context("reading the kernel object's maps")?;
        for name in PINNED_MAPS {
            let path = self.map_path(name);
            if !path.exists() {
                continue;
            }
            let Some(want) = obj.maps.get(name) else {
                bail!(
                    "the kernel object has no {name} map, but one is pinned at {}",
                    path.display()
                );
            };
            let have = MapInfo::from_pin(&path)
                .with_context(|| format!("reading the pinned map {}", path.display()))?;
            let have_type = have.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
            let same = have_type == want.map_type()
                && have.key_size() == want.key_size()
                && have.value_size() == want.value_size()
                && (have.max_entries() == want.max_entries() || want.max_entries() == 0);
            if !same {
                bail!(
                    "the pinned map {} (type {have_type}, key {} B, value {} B, {} entries) does not match this build's (type {}, key {} B, value {} B, {} entries); remove the old data path with `forwarder stop --detach --pin-dir {}`",
                    path.display(),
                    have.key_size(),
                    have.value_size(),
                    have.max_entries(),
                    want.map_type(),
                    want.key_size(),
                    want.value_size(),
                    want.max_entries(),
                    self.root.display()
                );
            }
        }
        Ok(())
    }

    /// Unpins everything: programs whose links were only held by their pins detach, maps
    /// no program uses any more are freed.
    pub fn remove(&self) -> anyhow::Result<bool> {
        if !self.root.exists() {
            return Ok(false);
        }
        remove_tree(&self.root)?;
        Ok(true)
    }
}

/// The interface the XDP or TCX link pinned at `path` is attached to; `None` once the
/// interface is gone (the link is then defunct and holds nothing).
pub fn pinned_link_ifindex(path: &Path) -> io::Result<Option<u32>> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let get = GetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `get` and the path it points to outlive the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &get) }?;
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then (8-byte aligned) a union whose first
    // field is the ifindex for both XDP and TCX links.
    let mut info = [0u64; 16];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` and `info` outlive the call and have the sizes passed.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) }?;
    let ifindex = (info[2] & 0xffff_ffff) as u32;
    Ok((ifindex != 0).then_some(ifindex))
}

/// The bpf(2) system call with `attr` as its attribute block.
///
/// # Safety
/// Pointers inside `attr` must be valid for what `cmd` does with them.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for the pointers in `attr`; its size is passed along.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const A, size_of::<A>() as u32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
    }
}

/// bpffs has no recursive unlink: files first, then the directories.
fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            remove_tree(&path)?;
        } else {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into `st`, which is large enough; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

fn ensure_bpffs(root: &Path) -> anyhow::Result<()> {
    // The nearest existing ancestor tells which filesystem `root` will be created on.
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            bail!("{} has no existing parent directory", root.display());
        }
    }
    if fs_magic(&probe).with_context(|| format!("statfs {}", probe.display()))? == BPF_FS_MAGIC {
        return Ok(());
    }
    let bpffs = Path::new(BPFFS);
    if probe == bpffs {
        let src = CString::new("bpf").expect("no NUL");
        let target = CString::new(BPFFS).expect("no NUL");
        let opts = CString::new("mode=0700").expect("no NUL");
        // SAFETY: all pointers are NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error()).context("mounting bpffs on /sys/fs/bpf");
        }
        info!("mounted bpffs on {BPFFS}");
        return Ok(());
    }
    bail!(
        "{} is not on a bpf filesystem: mount one (`mount -t bpf bpf {}`) or choose a --pin-dir under {BPFFS}",
        root.display(),
        probe.display()
    )
}
