//! Taking a lab down, also when a test panics: its processes (by PID), the NICs it
//! borrowed, its namespaces, WireGuard sockets, bpffs and directory.

use std::{
    fs,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::instance::Lab;

impl Drop for Lab {
    fn drop(&mut self) {
        use nix::{
            sys::signal::{Signal, kill},
            unistd::Pid,
        };
        let mut all: Vec<Child> = self.forwarder.take().into_iter().collect();
        all.extend(self.children.drain(..).map(|(_, c)| c));
        // SIGTERM first: wireguard-go removes its interface and socket, nginx its workers.
        for c in &all {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut all {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for (ns, name) in self.nics.drain(..) {
            // Back to the machine's own namespace (that of PID 1), under its own name.
            for args in [
                vec!["link", "set", "dev", "eth0", "down"],
                vec!["link", "set", "dev", "eth0", "name", &name],
                vec!["link", "set", "dev", &name, "netns", "1"],
            ] {
                let _ = Command::new("ip")
                    .args(["-n", &ns])
                    .args(&args)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            // Whatever our children forked and left in the namespace (socat, nginx workers)
            // is ours too; deleting a namespace does not end its processes.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
        for wg in [&self.wg_vps, &self.wg_home] {
            let _ = fs::remove_file(format!("/var/run/wireguard/{wg}.sock"));
        }
        // Unmounting the lab's bpffs unpins whatever the forwarder left there.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.bpffs())
            .stderr(Stdio::null())
            .status();
        if std::env::var_os("FWD_LAB_KEEP_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
