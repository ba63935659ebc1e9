//! `forwarder stop`: asks the daemon to exit (and, with `detach`, to take the data path
//! down), waits for it, then removes whatever is still pinned.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::{
    api::control,
    cli::change::ask,
    dataplane::{self, pin},
};

#[derive(clap::Args)]
pub struct StopArgs {
    /// Also remove the data path: detach the programs from the interfaces and free the
    /// maps (works without a running daemon too).
    #[arg(long)]
    pub detach: bool,
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    pub control: PathBuf,
    /// The daemon's --pin-dir.
    #[arg(long, value_name = "DIR", default_value = pin::DEFAULT_PIN_ROOT)]
    pub pin_dir: PathBuf,
}

pub fn run(args: StopArgs) -> anyhow::Result<()> {
    let StopArgs {
        detach,
        control: control_path,
        pin_dir,
    } = args;
    let (control, pin_dir) = (control_path.as_path(), pin_dir.as_path());
    let asked = match ask(control, control::Stop { detach }) {
        Ok(_) => true,
        Err(e) if !control.exists() => {
            if !detach {
                bail!("no daemon is running ({e:#})");
            }
            false
        }
        Err(e) => return Err(e),
    };
    if asked {
        // The daemon removes its socket as the last thing before exiting.
        let deadline = Instant::now() + Duration::from_secs(15);
        while control.exists() {
            if Instant::now() > deadline {
                bail!("the daemon did not exit within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("daemon stopped");
    }
    if detach {
        // Before TCX (6.6), clsact filters stand in for pinned tc links (a daemon that was
        // asked removed them already).
        let filters = dataplane::remove_lasting_filters();
        if pin::PinDir::existing(pin_dir).remove()? || filters > 0 {
            println!("data path removed ({} unpinned)", pin_dir.display());
        } else if !asked {
            println!(
                "nothing to remove: no daemon running, nothing pinned at {}",
                pin_dir.display()
            );
        }
    } else {
        println!("the data path keeps forwarding; `forwarder stop --detach` removes it");
    }
    Ok(())
}
