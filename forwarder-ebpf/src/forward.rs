//! The forwarding paths the programs run: the client's packets at ingress on the public
//! interface (`ingress`, generic over the hook), the backend's replies at ingress on the
//! tunnel (`reply`), and the bookkeeping every forwarded packet gets (`track`).

mod ingress;
mod reply;
mod track;

pub use ingress::ingress;
pub use reply::reply;
