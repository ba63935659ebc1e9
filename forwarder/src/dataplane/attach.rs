//! Attaching the programs: tc (TCX links from 6.6, clsact filters before), XDP in the
//! mode asked for, pinned links taken over from an earlier daemon.

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, Link as _, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
};
use forwarder_common::XDP_INGRESS_PROG;
use tracing::{info, warn};

use crate::{
    api::stats::AttachMode,
    dataplane::pin::{self, LinkKind, PinDir},
    sys::netif,
};

/// Which XDP modes to try, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpPreference {
    /// Driver mode, then generic, then tc-only.
    Auto,
    /// Driver mode or fail.
    Driver,
    /// Generic (skb) mode or fail.
    Generic,
    /// No XDP at all.
    Off,
}

/// Takes over the link pinned at `path` if it still serves `iface`; a stale one (the
/// interface was recreated) is unpinned.
fn pinned_link(path: &std::path::Path, iface: &str) -> anyhow::Result<Option<FdLink>> {
    if !path.exists() {
        return Ok(None);
    }
    let want = netif::ifindex(iface)?;
    match pin::pinned_link_ifindex(path) {
        Ok(Some(i)) if i == want => {
            let link = PinnedLink::from_pin(path)
                .with_context(|| format!("opening the pinned link {}", path.display()))?;
            Ok(Some(FdLink::from(link)))
        }
        other => {
            warn!(
                link = %path.display(),
                ?other,
                "the pinned link no longer serves {iface}; attaching anew"
            );
            std::fs::remove_file(path).with_context(|| format!("unpinning {}", path.display()))?;
            Ok(None)
        }
    }
}

pub(super) fn attach_tc(
    ebpf: &mut Ebpf,
    prog: &str,
    iface: &str,
    tcx: bool,
    pins: Option<&PinDir>,
) -> anyhow::Result<()> {
    let p: &mut SchedClassifier = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from the object"))?
        .try_into()?;
    p.load().with_context(|| format!("verifying {prog}"))?;
    attach_loaded_tc(ebpf, prog, iface, tcx, pins)
}

/// Attaches an already loaded tc program to `iface`'s ingress, taking over (or replacing
/// a stale) pinned link.
pub(super) fn attach_loaded_tc(
    ebpf: &mut Ebpf,
    prog: &str,
    iface: &str,
    tcx: bool,
    pins: Option<&PinDir>,
) -> anyhow::Result<()> {
    if !tcx {
        // Before TCX (6.6) tc programs hang off the clsact qdisc.
        if let Err(e) = tc::qdisc_add_clsact(iface) {
            let exists = matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
            if !exists {
                return Err(e).with_context(|| format!("adding the clsact qdisc to {iface}"));
            }
        }
    }
    let p: &mut SchedClassifier = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from the object"))?
        .try_into()?;
    if !tcx && pins.is_some() {
        return attach_lasting_filter(p, prog, iface);
    }
    // Only TCX links can be pinned and swapped; before 6.6 the filters of the clsact qdisc
    // stand in for them (`attach_lasting_filter`).
    let path = pins
        .filter(|_| tcx)
        .map(|p| p.link_path(LinkKind::TcIngress, iface));
    if let Some(path) = &path
        && let Some(link) = pinned_link(path, iface)?
    {
        p.attach_to_link(link.try_into()?)
            .with_context(|| format!("swapping {prog} into the running link on {iface}"))?;
        info!(program = prog, %iface, "replaced the running program");
        return Ok(());
    }
    let id = p
        .attach(iface, TcAttachType::Ingress)
        .with_context(|| format!("attaching {prog} to tc ingress of {iface}"))?;
    if let Some(path) = path {
        let link: FdLink = p.take_link(id)?.try_into()?;
        link.pin(&path)
            .with_context(|| format!("pinning the {prog} link at {}", path.display()))?;
    }
    Ok(())
}

/// Priority and handle of the data path's tc filters before TCX (6.6): fixed, so that the
/// next daemon finds the filter a previous one left, and `forwarder stop --detach` what
/// to remove. Unusual values, to stay clear of a user's own filters.
pub const TC_FILTER_PRIORITY: u16 = 0xf0d;
pub const TC_FILTER_HANDLE: TcHandle = TcHandle::new(0xf0d, 1);

/// Before TCX there are no tc links to pin: the program goes into a clsact filter of a
/// fixed priority and handle that outlives the daemon (the kernel keeps a filter until it
/// is deleted), as pinned links do from 6.6 on. A filter a previous daemon left is taken
/// over by replacing its program in place (one netlink change, no gap).
fn attach_lasting_filter(p: &mut SchedClassifier, prog: &str, iface: &str) -> anyhow::Result<()> {
    let existing = SchedClassifierLink::attached(
        iface,
        TcAttachType::Ingress,
        TC_FILTER_PRIORITY,
        TC_FILTER_HANDLE,
        None,
    )
    .with_context(|| format!("looking up {iface}"))?;
    let id = match p.attach_to_link(existing) {
        Ok(id) => {
            info!(program = prog, %iface, "replaced the running program (clsact filter)");
            id
        }
        // No filter of ours there yet (replacing one that does not exist fails).
        Err(_) => p
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::Netlink(NlOptions {
                    priority: TC_FILTER_PRIORITY,
                    handle: TC_FILTER_HANDLE,
                    ..NlOptions::default()
                }),
            )
            .with_context(|| format!("attaching {prog} to tc ingress of {iface}"))?,
    };
    // Dropping the link would delete the filter: it stays, like a pinned link.
    std::mem::forget(p.take_link(id)?);
    Ok(())
}

/// Deletes the data path's clsact filters (`attach_lasting_filter`) from every interface
/// of the namespace; returns how many there were.
pub fn remove_lasting_filters() -> usize {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(link) = SchedClassifierLink::attached(
            &name,
            TcAttachType::Ingress,
            TC_FILTER_PRIORITY,
            TC_FILTER_HANDLE,
            None,
        ) && link.detach().is_ok()
        {
            n += 1;
        }
    }
    n
}

pub(super) fn attach_xdp(
    ebpf: &mut Ebpf,
    iface: &str,
    pref: XdpPreference,
    pins: Option<&PinDir>,
    previous: Option<AttachMode>,
) -> anyhow::Result<AttachMode> {
    let p: &mut Xdp = ebpf
        .program_mut(XDP_INGRESS_PROG)
        .context("XDP program missing from the object")?
        .try_into()?;
    let path = pins.map(|p| p.link_path(LinkKind::Xdp, iface));
    let pinned = match &path {
        Some(path) => pinned_link(path, iface)?,
        None => None,
    };
    if pref == XdpPreference::Off {
        if let (Some(path), Some(_)) = (&path, &pinned) {
            std::fs::remove_file(path).with_context(|| format!("unpinning {}", path.display()))?;
            warn!("removed the running XDP program from {iface} (XDP disabled by configuration)");
        }
        warn!("XDP disabled by configuration: tc translates every packet (slower)");
        return Ok(AttachMode::TcOnly);
    }
    p.load().context("verifying the XDP program")?;
    let keep = matches!(
        (pref, previous),
        (
            XdpPreference::Auto,
            Some(AttachMode::XdpDriver | AttachMode::XdpGeneric)
        ) | (XdpPreference::Driver, Some(AttachMode::XdpDriver))
            | (XdpPreference::Generic, Some(AttachMode::XdpGeneric))
    );
    if let (Some(link), Some(mode)) = (pinned, previous) {
        if keep {
            p.attach_to_link(link.try_into()?)
                .with_context(|| format!("swapping the XDP program on {iface}"))?;
            info!(%iface, mode = mode.as_str(), "replaced the running XDP program");
            return Ok(mode);
        }
        // Another mode was asked for: the old link goes, the new one is made below.
        if let Some(path) = &path {
            std::fs::remove_file(path).with_context(|| format!("unpinning {}", path.display()))?;
        }
    }
    let tries: &[(XdpMode, AttachMode)] = match pref {
        XdpPreference::Auto => &[
            (XdpMode::Driver, AttachMode::XdpDriver),
            (XdpMode::Skb, AttachMode::XdpGeneric),
        ],
        XdpPreference::Driver => &[(XdpMode::Driver, AttachMode::XdpDriver)],
        XdpPreference::Generic => &[(XdpMode::Skb, AttachMode::XdpGeneric)],
        XdpPreference::Off => &[],
    };
    let mut last = None;
    for (xdp_mode, mode) in tries {
        match p.attach(iface, *xdp_mode) {
            Ok(id) => {
                if *mode != AttachMode::XdpDriver {
                    warn!(
                        "{iface} refused driver-mode XDP; running XDP in generic mode ({})",
                        mode.as_str()
                    );
                }
                if let Some(path) = &path {
                    let link: FdLink = p.take_link(id)?.try_into()?;
                    link.pin(path)
                        .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
                }
                return Ok(*mode);
            }
            Err(e) => {
                warn!(
                    "attaching XDP to {iface} in {:?} mode failed: {e}",
                    xdp_mode
                );
                last = Some(e);
            }
        }
    }
    if pref == XdpPreference::Auto {
        warn!("{iface} accepts no XDP program; falling back to tc-only translation (slower)");
        return Ok(AttachMode::TcOnly);
    }
    Err(last.map_or_else(
        || anyhow::anyhow!("no XDP mode to try"),
        anyhow::Error::from,
    ))
    .with_context(|| format!("attaching XDP to {iface} ({pref:?} mode requested)"))
}
