//! Labs as most suites want them, panicking with the reason when the machine cannot.

use super::{
    addresses::SUBDOMAINS, instance::Lab, options::LabOptions, prerequisites::missing_prerequisites,
};

/// A lab whose forwarder counts the three subdomains as hosts; panics with the reason when
/// the machine cannot build one.
pub fn lab_with_subdomain_hosts() -> Lab {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    Lab::new(&LabOptions {
        extra_config: subdomain_hosts(),
        ..LabOptions::default()
    })
    .expect("building the lab")
}

/// `[[host]]` sections for the lab's three subdomains.
pub fn subdomain_hosts() -> String {
    SUBDOMAINS
        .iter()
        .map(|h| format!("[[host]]\nname = \"{h}\"\n"))
        .collect()
}

/// A lab with the forwarder running, or a panic that says why not (CI must be able to).
pub fn lab_with_forwarder(opts: &LabOptions) -> Lab {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(opts).expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");
    lab
}
